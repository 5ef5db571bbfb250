// Package silencestore keeps the evaluator's silences in a NATS KV bucket,
// so that every replica sees the same set: CRUD for the HTTP API, a watcher
// that hands the full set to its owner on every change, garbage collection
// of expired silences, and config-defined recurring maintenance windows
// (window.go) expanded into concrete silences.
package silencestore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the KV bucket of silences.
const DefaultBucket = "fleetwatch_silences"

// Config is the evaluator.silences section.
type Config struct {
	// Bucket is the KV bucket (default fleetwatch_silences).
	Bucket string `yaml:"bucket"`
	// Retention is how long an expired silence stays in the bucket (and in
	// the API's list) before it is garbage-collected (default 24h).
	Retention time.Duration `yaml:"retention"`
	// GCInterval is how often expired silences are looked for (default 1m).
	GCInterval time.Duration `yaml:"gc_interval"`
	// Windows are recurring maintenance windows.
	Windows []WindowConfig `yaml:"windows"`
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Retention == 0 {
		c.Retention = 24 * time.Hour
	}
	if c.GCInterval == 0 {
		c.GCInterval = time.Minute
	}
	return c
}

var bucketRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Validate checks the settings (defaults applied); errors name the field
// under prefix.
func (c Config) Validate(prefix string) error {
	switch {
	case !bucketRE.MatchString(c.Bucket):
		return fmt.Errorf("%s.bucket is %q: use letters, digits, _ and -, e.g. %s", prefix, c.Bucket, DefaultBucket)
	case c.Retention < 0:
		return fmt.Errorf("%s.retention is %s: use a positive duration, e.g. 24h", prefix, c.Retention)
	case c.GCInterval < time.Second:
		return fmt.Errorf("%s.gc_interval is %s: use at least 1s, e.g. 1m", prefix, c.GCInterval)
	}
	_, err := CompileWindows(c.Windows, prefix+".windows")
	return err
}

// Errors of the store.
var (
	// ErrNotFound: no silence has that id.
	ErrNotFound = errors.New("silence not found")
	// ErrExists: a silence with that id exists already.
	ErrExists = errors.New("silence exists already")
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// CheckID validates a silence id: 1 to 128 letters, digits, _ and -.
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%w: id %q: use 1 to 128 letters, digits, _ and - (or leave it out to get one)", silence.ErrInvalid, id)
	}
	return nil
}

// NewID returns a random silence id.
func NewID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// Store is the KV bucket of silences. It is safe for concurrent use.
type Store struct {
	kv  jetstream.KeyValue
	cfg Config
	log *slog.Logger
}

// Open creates (or updates) the bucket, history 1, and returns the store.
// replicas and memory follow the deployment's topology.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, replicas int, memory bool, log *slog.Logger) (*Store, error) {
	cfg = cfg.WithDefaults()
	kv, err := events.EnsureKeyValue(ctx, js, events.StateBucket(cfg.Bucket, "fleetwatch silences, by id (evaluator API and config)", replicas, memory))
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{kv: kv, cfg: cfg, log: log}, nil
}

// decode parses a stored silence and compiles it.
func decode(key string, b []byte) (silence.Silence, error) {
	var s silence.Silence
	if err := json.Unmarshal(b, &s); err != nil {
		return silence.Silence{}, fmt.Errorf("silence %s: %w", key, err)
	}
	if s.ID != key {
		return silence.Silence{}, fmt.Errorf("silence %s: stored id %q differs from its key", key, s.ID)
	}
	if err := s.Compile(); err != nil {
		return silence.Silence{}, fmt.Errorf("silence %s: %w", key, err)
	}
	return s, nil
}

// Get returns one silence.
func (st *Store) Get(ctx context.Context, id string) (silence.Silence, error) {
	if CheckID(id) != nil {
		return silence.Silence{}, ErrNotFound
	}
	e, err := st.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return silence.Silence{}, ErrNotFound
	}
	if err != nil {
		return silence.Silence{}, fmt.Errorf("get silence %s: %w", id, err)
	}
	return decode(id, e.Value())
}

// List returns every stored silence, sorted by id. Entries that do not
// parse are logged and left out.
func (st *Store) List(ctx context.Context) ([]silence.Silence, error) {
	w, err := st.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list silences: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []silence.Silence
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				slices.SortFunc(out, func(a, b silence.Silence) int { return strings.Compare(a.ID, b.ID) })
				return out, nil
			}
			s, err := decode(e.Key(), e.Value())
			if err != nil {
				st.log.Warn("skip a bad silence in the bucket", "err", err)
				continue
			}
			out = append(out, s)
		}
	}
}

// Create stores a new silence (it must be valid: see Prepare); ErrExists
// when its id is taken.
func (st *Store) Create(ctx context.Context, s silence.Silence) error {
	b, err := encode(s)
	if err != nil {
		return err
	}
	if _, err := st.kv.Create(ctx, s.ID, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrExists
		}
		return fmt.Errorf("create silence %s: %w", s.ID, err)
	}
	return nil
}

// Put creates or replaces a silence (it must be valid: see Prepare).
func (st *Store) Put(ctx context.Context, s silence.Silence) error {
	b, err := encode(s)
	if err != nil {
		return err
	}
	if _, err := st.kv.Put(ctx, s.ID, b); err != nil {
		return fmt.Errorf("put silence %s: %w", s.ID, err)
	}
	return nil
}

// Delete removes a silence; ErrNotFound when there is none.
func (st *Store) Delete(ctx context.Context, id string) error {
	if _, err := st.Get(ctx, id); err != nil {
		return err
	}
	if err := st.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("delete silence %s: %w", id, err)
	}
	return nil
}

func encode(s silence.Silence) ([]byte, error) {
	if err := CheckID(s.ID); err != nil {
		return nil, err
	}
	if err := s.Compile(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// Prepare validates a silence received from a client: it generates the id
// when empty, defaults starts_at to now, normalises the times to UTC
// milliseconds and compiles it.
func Prepare(s silence.Silence, now time.Time) (silence.Silence, error) {
	if s.ID == "" {
		s.ID = NewID()
	}
	if err := CheckID(s.ID); err != nil {
		return silence.Silence{}, err
	}
	if s.StartsAt.IsZero() {
		s.StartsAt = now
	}
	s.StartsAt = s.StartsAt.UTC().Truncate(time.Millisecond)
	s.EndsAt = s.EndsAt.UTC().Truncate(time.Millisecond)
	s.Matchers = slices.Clone(s.Matchers)
	if err := s.Compile(); err != nil {
		return silence.Silence{}, err
	}
	return s, nil
}

// GC deletes the silences that ended more than the retention before now,
// each only if it did not change meanwhile. It returns how many it deleted.
func (st *Store) GC(ctx context.Context, now time.Time) (int, error) {
	w, err := st.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("gc silences: %w", err)
	}
	type old struct {
		key string
		rev uint64
	}
	var expired []old
	for done := false; !done; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return 0, ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				done = true
				break
			}
			var s silence.Silence
			if json.Unmarshal(e.Value(), &s) != nil || !s.EndsAt.IsZero() && now.Sub(s.EndsAt) >= st.cfg.Retention {
				expired = append(expired, old{e.Key(), e.Revision()})
			}
		}
	}
	_ = w.Stop()
	n := 0
	for _, o := range expired {
		err := st.kv.Purge(ctx, o.key, jetstream.LastRevision(o.rev))
		switch {
		case err == nil:
			n++
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			// changed meanwhile: a newer version, looked at next time
		default:
			return n, fmt.Errorf("gc silence %s: %w", o.key, err)
		}
	}
	return n, nil
}

// RunGC garbage-collects every cfg.GCInterval until ctx ends.
func (st *Store) RunGC(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(st.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := st.GC(ctx, now())
			switch {
			case err != nil && ctx.Err() == nil:
				st.log.Warn("garbage-collect expired silences", "err", err)
			case n > 0:
				st.log.Info("garbage-collected expired silences", "deleted", n)
			}
		}
	}
}

// Watch calls fn with every stored silence (compiled, sorted by id) once
// the bucket's current content is read, and again after every change, until
// ctx ends. fn runs on Watch's goroutine. Entries that do not parse are
// logged and left out.
func (st *Store) Watch(ctx context.Context, fn func([]silence.Silence)) error {
	w, err := st.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch silences: %w", err)
	}
	defer func() { _ = w.Stop() }()
	set := map[string]silence.Silence{}
	loaded := false
	emit := func() {
		out := slices.Collect(maps.Values(set))
		slices.SortFunc(out, func(a, b silence.Silence) int { return strings.Compare(a.ID, b.ID) })
		fn(out)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch silences: the watcher stopped")
			}
			if e == nil {
				loaded = true
				emit()
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				delete(set, e.Key())
			} else if s, err := decode(e.Key(), e.Value()); err != nil {
				st.log.Warn("skip a bad silence in the bucket", "err", err)
				delete(set, e.Key())
			} else {
				set[e.Key()] = s
			}
			if loaded {
				emit()
			}
		}
	}
}
