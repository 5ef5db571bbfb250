// Package snapshotstore keeps the evaluator's state snapshots in a NATS
// object store bucket: the tracker's snapshot (tracker.MarshalSnapshot)
// with the stream positions it covers, so that a restart loads it and
// replays only the tail of PRESENCE instead of the whole stream.
//
// One object per key: "all" while one evaluator owns every partition (or
// with one lease partition), "l<l>of<L>" for lease partition l of L. An
// object is written whole and replaces the previous one; a reader sees the
// old or the new one.
//
// Fencing: a snapshot written under a partition lease carries the lease's
// epoch in the object's metadata ("epoch"). Put refuses (ErrFenced) to
// replace a snapshot written with a newer epoch, so that a replica that
// lost its lease without noticing (frozen past its margin) cannot replace
// the new owner's snapshot. The check reads the object's info just before
// writing: it closes the window down to that read-then-write, not fully.
//
// Envelope (version 1): the magic "FWES", a version byte, then uvarints:
// the PRESENCE sequence covered, the ALERTS sequence covered, the creation
// times (unix ns) of the PRESENCE and ALERTS streams it was taken from, the
// partition count; then the tracker snapshot's length and bytes, and a
// CRC-32 (IEEE) of everything before it, big-endian.
package snapshotstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"regexp"
	"strconv"
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

// ErrFenced is returned by Put when the stored snapshot was written with a
// newer lease epoch than the one being written.
var ErrFenced = errors.New("snapshot written by a newer lease owner")

// epochKey is the object metadata key of the writer's lease epoch.
const epochKey = "epoch"

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
	// Epoch is the lease epoch of the writer (0 without leases). It is
	// kept in the object's metadata, not in the envelope.
	Epoch uint64
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
	ocfg := jetstream.ObjectStoreConfig{
		Bucket:      bucket,
		Description: "fleetwatch evaluator state snapshots, by partition (all: every partition)",
		Storage:     storage,
		Replicas:    max(replicas, 1),
	}
	// Create first, update only a bucket that exists with another
	// configuration: on a cluster, an update racing another replica's
	// create of the same bucket can go unanswered.
	obs, err := js.CreateObjectStore(ctx, ocfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		obs, err = js.UpdateObjectStore(ctx, ocfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create or update object store %s: %w", bucket, err)
	}
	return &Store{obs: obs, bucket: bucket}, nil
}

// Put stores s under key, replacing the previous snapshot, and returns its
// size in bytes. A snapshot with an Epoch does not replace one written
// with a newer epoch: that is ErrFenced.
func (st *Store) Put(ctx context.Context, key string, s Snapshot) (int, error) {
	if s.Epoch > 0 {
		info, err := st.obs.GetInfo(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrObjectNotFound):
		case err != nil:
			return 0, fmt.Errorf("check snapshot %s/%s: %w", st.bucket, key, err)
		default:
			if e := epochOf(info); e > s.Epoch {
				return 0, fmt.Errorf("put snapshot %s/%s with epoch %d: %w (epoch %d)", st.bucket, key, s.Epoch, ErrFenced, e)
			}
		}
	}
	b := s.Marshal()
	meta := jetstream.ObjectMeta{Name: key}
	if s.Epoch > 0 {
		meta.Metadata = map[string]string{epochKey: strconv.FormatUint(s.Epoch, 10)}
	}
	if _, err := st.obs.Put(ctx, meta, bytes.NewReader(b)); err != nil {
		return 0, fmt.Errorf("put snapshot %s/%s: %w", st.bucket, key, err)
	}
	return len(b), nil
}

// epochOf is the lease epoch in an object's metadata (0: none).
func epochOf(info *jetstream.ObjectInfo) uint64 {
	if info == nil {
		return 0
	}
	e, _ := strconv.ParseUint(info.Metadata[epochKey], 10, 64)
	return e
}

// Get returns the snapshot under key and its size in bytes; ok is false
// when there is none. A snapshot that does not decode is an error wrapping
// ErrCorrupt.
func (st *Store) Get(ctx context.Context, key string) (s Snapshot, size int, ok bool, err error) {
	res, err := st.obs.Get(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return Snapshot{}, 0, false, nil
	}
	if err != nil {
		return Snapshot{}, 0, false, fmt.Errorf("get snapshot %s/%s: %w", st.bucket, key, err)
	}
	defer res.Close()
	b, err := io.ReadAll(res)
	if err != nil {
		return Snapshot{}, 0, false, fmt.Errorf("get snapshot %s/%s: %w", st.bucket, key, err)
	}
	info, _ := res.Info()
	s, err = Unmarshal(b)
	if err != nil {
		return Snapshot{}, len(b), false, err
	}
	s.Epoch = epochOf(info)
	return s, len(b), true, nil
}
