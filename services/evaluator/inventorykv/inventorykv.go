// Package inventorykv keeps the dynamic device inventory in a NATS KV
// bucket: key = the device id (encoded, see Key), value = a JSON object of
// labels, e.g. {"site":"plant7","owner":"ops-east"}. The API writes it; every
// evaluator replica watches it and layers it over its inventory file
// (labels.Dynamic): a label from the bucket overrides the file's.
package inventorykv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the KV bucket of the dynamic inventory.
const DefaultBucket = "fleetwatch_inventory"

// MaxKeyLen bounds an encoded key. Longer device ids cannot have dynamic
// inventory labels (use the inventory file).
const MaxKeyLen = 1024

// MaxLabels bounds the labels of one device.
const MaxLabels = 64

// Config is the evaluator.inventory_kv section.
type Config struct {
	// Bucket is the KV bucket (default fleetwatch_inventory).
	Bucket string `yaml:"bucket"`
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	return c
}

var bucketRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Validate checks the settings (defaults applied).
func (c Config) Validate(prefix string) error {
	if !bucketRE.MatchString(c.Bucket) {
		return fmt.Errorf("%s.bucket is %q: use letters, digits, _ and -, e.g. %s", prefix, c.Bucket, DefaultBucket)
	}
	return nil
}

// Errors.
var (
	// ErrNotFound: the device has no entry.
	ErrNotFound = errors.New("no inventory entry for this device")
	// ErrInvalid is wrapped by every validation error.
	ErrInvalid = errors.New("invalid inventory entry")
)

const hexDigits = "0123456789ABCDEF"

// Key encodes a device id (any non-empty UTF-8) as a KV key, reversibly:
// letters, digits, _ and - are kept, every other byte becomes =XX.
func Key(deviceID string) (string, error) {
	if deviceID == "" {
		return "", fmt.Errorf("%w: the device id is empty", ErrInvalid)
	}
	var b strings.Builder
	for i := 0; i < len(deviceID); i++ {
		c := deviceID[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('=')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
		if b.Len() > MaxKeyLen {
			return "", fmt.Errorf("%w: the device id is too long for the inventory bucket (encoded key over %d bytes): use the inventory file", ErrInvalid, MaxKeyLen)
		}
	}
	return b.String(), nil
}

// DeviceID decodes a key made by Key.
func DeviceID(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty key", ErrInvalid)
	}
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-':
			b.WriteByte(c)
		case c == '=' && i+2 < len(key) && isUpperHex(key[i+1]) && isUpperHex(key[i+2]):
			v := unhex(key[i+1])<<4 | unhex(key[i+2])
			if v >= 'a' && v <= 'z' || v >= 'A' && v <= 'Z' || v >= '0' && v <= '9' || v == '_' || v == '-' {
				return "", fmt.Errorf("%w: key %q escapes a byte that is kept as is", ErrInvalid, key)
			}
			b.WriteByte(v)
			i += 2
		default:
			return "", fmt.Errorf("%w: key %q is not an encoded device id", ErrInvalid, key)
		}
	}
	return b.String(), nil
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// ParseLabels decodes and validates a stored or submitted labels object:
// label names only (not device_id, node or reason), at most MaxLabels.
func ParseLabels(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: want a JSON object of label names to string values: %v", ErrInvalid, err)
	}
	if err := CheckLabels(m); err != nil {
		return nil, err
	}
	return m, nil
}

// CheckLabels validates a labels map.
func CheckLabels(m map[string]string) error {
	if m == nil {
		return fmt.Errorf("%w: labels is missing: send a JSON object, e.g. {\"site\":\"plant7\"}", ErrInvalid)
	}
	if len(m) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d", ErrInvalid, len(m), MaxLabels)
	}
	if err := labels.CheckInventoryLabels(m); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Store is the inventory bucket. It is safe for concurrent use.
type Store struct {
	kv  jetstream.KeyValue
	log *slog.Logger
}

// Open creates (or updates) the bucket, history 1, and returns the store.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int, memory bool, log *slog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	kv, err := events.EnsureKeyValue(ctx, js, events.StateBucket(cfg.Bucket, "fleetwatch dynamic device inventory: device id -> labels (evaluator API)", replicas, memory))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{kv: kv, log: log}, nil
}

// Get returns a device's labels.
func (s *Store) Get(ctx context.Context, deviceID string) (map[string]string, error) {
	k, err := Key(deviceID)
	if err != nil {
		return nil, err
	}
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get inventory %s: %w", k, err)
	}
	return ParseLabels(e.Value())
}

// Put sets a device's labels (validated).
func (s *Store) Put(ctx context.Context, deviceID string, m map[string]string) error {
	k, err := Key(deviceID)
	if err != nil {
		return err
	}
	if err := CheckLabels(m); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode inventory: %w", err)
	}
	if _, err := s.kv.Put(ctx, k, b); err != nil {
		return fmt.Errorf("put inventory %s: %w", k, err)
	}
	return nil
}

// Delete removes a device's entry; ErrNotFound when it has none.
func (s *Store) Delete(ctx context.Context, deviceID string) error {
	if _, err := s.Get(ctx, deviceID); err != nil {
		return err
	}
	k, _ := Key(deviceID)
	if err := s.kv.Purge(ctx, k); err != nil {
		return fmt.Errorf("delete inventory %s: %w", k, err)
	}
	return nil
}

// Update is a change of one device's entry, or the end of the initial load.
type Update struct {
	// DeviceID and Labels: the new labels; nil Labels: the entry was
	// deleted.
	DeviceID string
	Labels   map[string]string
	// Loaded marks the end of the bucket's content at watch start.
	Loaded bool
}

// Watch calls fn for every entry in the bucket, then with Loaded, then for
// every change, until ctx ends. fn runs on Watch's goroutine. Entries that
// do not parse are logged and treated as deleted.
func (s *Store) Watch(ctx context.Context, fn func(Update)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch inventory: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch inventory: the watcher stopped")
			}
			if e == nil {
				fn(Update{Loaded: true})
				continue
			}
			id, err := DeviceID(e.Key())
			if err != nil {
				s.log.Warn("skip a bad key in the inventory bucket", "err", err)
				continue
			}
			u := Update{DeviceID: id}
			if e.Operation() == jetstream.KeyValuePut {
				if u.Labels, err = ParseLabels(e.Value()); err != nil {
					s.log.Warn("ignore a bad inventory entry", "device_id", id, "err", err)
				}
			}
			fn(u)
		}
	}
}
