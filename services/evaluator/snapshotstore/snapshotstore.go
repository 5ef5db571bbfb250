// Package snapshotstore keeps the evaluator's state snapshots in a NATS
// object store bucket: the tracker's snapshot (tracker.MarshalSnapshot)
// with the stream positions it covers, so that a restart loads it and
// replays only the tail of PRESENCE instead of the whole stream.
//
// One object per key: "all" while one evaluator owns every partition (a
// partition's id once partitions are leased). An object is written whole
// and replaces the previous one; a reader sees the old or the new one.
//
// Envelope (version 1): the magic "FWES", a version byte, then uvarints:
// the PRESENCE sequence covered, the ALERTS sequence covered, the creation
// times (unix ns) of the PRESENCE and ALERTS streams it was taken from, the
// partition count; then the tracker snapshot's length and bytes, and a
// CRC-32 (IEEE) of everything before it, big-endian.
package snapshotstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultBucket is the object store bucket of snapshots.
const DefaultBucket = "fleetwatch_evaluator_snapshots"

// KeyAll names the snapshot of an evaluator that owns every partition.
const KeyAll = "all"

const (
	magic   = "FWES"
	version = 1
)

// ErrCorrupt is wrapped by every Unmarshal error.
var ErrCorrupt = errors.New("corrupt or incompatible evaluator snapshot")

// Snapshot is a tracker snapshot and the stream positions it covers.
type Snapshot struct {
	// PresenceSeq: every PRESENCE message up to this sequence was applied
	// (and acked); a restart replays from the next one.
	PresenceSeq uint64
	// AlertsSeq: every alert the state decided is in ALERTS up to this
	// sequence; a restart reads the ids after it to recognise what was
	// published meanwhile.
	AlertsSeq uint64
	// PresenceCreated and AlertsCreated identify the streams (their
	// creation time): a stream deleted and created again restarts its
	// sequences, and makes the snapshot useless.
	PresenceCreated, AlertsCreated time.Time
	// Partitions is the deployment's partition count.
	Partitions int
	// Tracker is tracker.MarshalSnapshot's output.
	Tracker []byte
}

// Marshal encodes the snapshot.
func (s Snapshot) Marshal() []byte {
	b := make([]byte, 0, len(s.Tracker)+64)
	b = append(b, magic...)
	b = append(b, version)
	b = binary.AppendUvarint(b, s.PresenceSeq)
	b = binary.AppendUvarint(b, s.AlertsSeq)
	b = binary.AppendVarint(b, s.PresenceCreated.UnixNano())
	b = binary.AppendVarint(b, s.AlertsCreated.UnixNano())
	b = binary.AppendUvarint(b, uint64(max(s.Partitions, 0)))
	b = binary.AppendUvarint(b, uint64(len(s.Tracker)))
	b = append(b, s.Tracker...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

// Unmarshal decodes a snapshot written by Marshal. The tracker bytes share
// b's memory.
func Unmarshal(b []byte) (Snapshot, error) {
	var s Snapshot
	if len(b) < len(magic)+1+4 || string(b[:len(magic)]) != magic {
		return s, fmt.Errorf("%w: no %q header", ErrCorrupt, magic)
	}
	if v := b[len(magic)]; v != version {
		return s, fmt.Errorf("%w: version %d, this build reads %d", ErrCorrupt, v, version)
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return s, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	r := body[len(magic)+1:]
	var err error
	uv := func() uint64 {
		v, n := binary.Uvarint(r)
		if n <= 0 {
			err = fmt.Errorf("%w: truncated", ErrCorrupt)
			r = nil
			return 0
		}
		r = r[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(r)
		if n <= 0 {
			err = fmt.Errorf("%w: truncated", ErrCorrupt)
			r = nil
			return 0
		}
		r = r[n:]
		return v
	}
	s.PresenceSeq = uv()
	s.AlertsSeq = uv()
	s.PresenceCreated = time.Unix(0, sv())
	s.AlertsCreated = time.Unix(0, sv())
	parts := uv()
	n := uv()
	if err != nil {
		return Snapshot{}, err
	}
	if parts > 1<<20 {
		return Snapshot{}, fmt.Errorf("%w: %d partitions", ErrCorrupt, parts)
	}
	if n != uint64(len(r)) {
		return Snapshot{}, fmt.Errorf("%w: tracker snapshot of %d bytes, %d left", ErrCorrupt, n, len(r))
	}
	s.Partitions = int(parts)
	s.Tracker = r
	return s, nil
}

var bucketRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// ValidateBucket checks a bucket name; the error names field.
func ValidateBucket(field, bucket string) error {
	if !bucketRE.MatchString(bucket) {
		return fmt.Errorf("%s is %q: use letters, digits, _ and -, e.g. %s", field, bucket, DefaultBucket)
	}
	return nil
}

// Store is the object store bucket of snapshots. It is safe for concurrent
// use.
type Store struct {
	obs    jetstream.ObjectStore
	bucket string
}

// Open creates (or updates) the bucket and returns the store. replicas and
// memory follow the deployment's topology.
func Open(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, memory bool) (*Store, error) {
	storage := jetstream.FileStorage
	if memory {
		storage = jetstream.MemoryStorage
	}
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "fleetwatch evaluator state snapshots, by partition (all: every partition)",
		Storage:     storage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create or update object store %s: %w", bucket, err)
	}
	return &Store{obs: obs, bucket: bucket}, nil
}

// Put stores s under key, replacing the previous snapshot, and returns its
// size in bytes.
func (st *Store) Put(ctx context.Context, key string, s Snapshot) (int, error) {
	b := s.Marshal()
	if _, err := st.obs.PutBytes(ctx, key, b); err != nil {
		return 0, fmt.Errorf("put snapshot %s/%s: %w", st.bucket, key, err)
	}
	return len(b), nil
}

// Get returns the snapshot under key and its size in bytes; ok is false
// when there is none. A snapshot that does not decode is an error wrapping
// ErrCorrupt.
func (st *Store) Get(ctx context.Context, key string) (s Snapshot, size int, ok bool, err error) {
	b, err := st.obs.GetBytes(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Snapshot{}, 0, false, nil
	}
	if err != nil {
		return Snapshot{}, 0, false, fmt.Errorf("get snapshot %s/%s: %w", st.bucket, key, err)
	}
	s, err = Unmarshal(b)
	if err != nil {
		return Snapshot{}, len(b), false, err
	}
	return s, len(b), true, nil
}
