package snapshotstore_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
)

func sample() snapshotstore.Snapshot {
	return snapshotstore.Snapshot{PresenceSeq: 123456, AlertsSeq: 789, PresenceCreated: time.Unix(1_700_000_000, 5),
		AlertsCreated: time.Unix(1_700_000_001, 6), Partitions: 64, Tracker: []byte("FWTS\x01tracker state")}
}

func TestRoundTrip(t *testing.T) {
	s := sample()
	got, err := snapshotstore.Unmarshal(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("got %+v, want %+v", got, s)
	}
}

func TestUnmarshalRejects(t *testing.T) {
	good := sample().Marshal()
	flip := bytes.Clone(good)
	flip[10] ^= 1
	version := bytes.Clone(good)
	version[4] = 2
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":     {nil, `corrupt or incompatible evaluator snapshot: no "FWES" header`},
		"magic":     {append([]byte("XXXX"), good[4:]...), `corrupt or incompatible evaluator snapshot: no "FWES" header`},
		"version":   {version, "corrupt or incompatible evaluator snapshot: version 2, this build reads 1"},
		"bit flip":  {flip, "corrupt or incompatible evaluator snapshot: checksum mismatch"},
		"truncated": {good[:len(good)-7], "corrupt or incompatible evaluator snapshot: checksum mismatch"},
	} {
		_, err := snapshotstore.Unmarshal(tc.b)
		if !errors.Is(err, snapshotstore.ErrCorrupt) || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(sample().Marshal())
	f.Add([]byte("FWES\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := snapshotstore.Unmarshal(b)
		if err != nil {
			if !errors.Is(err, snapshotstore.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// What decodes encodes back to the same snapshot.
		again, err := snapshotstore.Unmarshal(s.Marshal())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("re-encoded snapshot differs (%v):\n%+v\n%+v", err, again, s)
		}
	})
}

func TestStore(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	st, err := snapshotstore.Open(t.Context(), js, snapshotstore.DefaultBucket, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := st.Get(t.Context(), snapshotstore.KeyAll); ok || err != nil {
		t.Fatalf("empty bucket: %v %v", ok, err)
	}
	s := sample()
	s.Tracker = bytes.Repeat([]byte("x"), 300_000) // several chunks
	n, err := st.Put(t.Context(), snapshotstore.KeyAll, s)
	if err != nil || n != len(s.Marshal()) {
		t.Fatalf("put: %d %v", n, err)
	}
	s.PresenceSeq++
	if _, err := st.Put(t.Context(), snapshotstore.KeyAll, s); err != nil {
		t.Fatal(err)
	}
	got, size, ok, err := st.Get(t.Context(), snapshotstore.KeyAll)
	if err != nil || !ok || size != n || !reflect.DeepEqual(got, s) {
		t.Fatalf("get: %v %v %d", ok, err, size)
	}
	if err := snapshotstore.ValidateBucket("evaluator.snapshot_bucket", "a.b"); err == nil ||
		err.Error() != `evaluator.snapshot_bucket is "a.b": use letters, digits, _ and -, e.g. fleetwatch_evaluator_snapshots` {
		t.Fatalf("validate: %v", err)
	}
}

// TestStoreFencing: a snapshot written with a lease epoch keeps it, and an
// older epoch cannot replace it; a newer one can.
func TestStoreFencing(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	st, err := snapshotstore.Open(t.Context(), js, snapshotstore.DefaultBucket, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	const key = "l1of4"
	s := sample()
	s.Epoch = 7
	if _, err := st.Put(t.Context(), key, s); err != nil {
		t.Fatal(err)
	}
	stale := s
	stale.Epoch, stale.PresenceSeq = 5, 999
	if _, err := st.Put(t.Context(), key, stale); !errors.Is(err, snapshotstore.ErrFenced) {
		t.Fatalf("put with an older epoch: %v, want ErrFenced", err)
	}
	got, _, ok, err := st.Get(t.Context(), key)
	if err != nil || !ok || !reflect.DeepEqual(got, s) {
		t.Fatalf("get after a fenced put: %+v %v %v", got, ok, err)
	}
	same := s
	same.PresenceSeq++
	if _, err := st.Put(t.Context(), key, same); err != nil {
		t.Fatalf("put with the same epoch: %v", err)
	}
	newer := s
	newer.Epoch = 9
	if _, err := st.Put(t.Context(), key, newer); err != nil {
		t.Fatalf("put with a newer epoch: %v", err)
	}
	if got, _, _, _ := st.Get(t.Context(), key); got.Epoch != 9 {
		t.Fatalf("epoch %d after the newer put, want 9", got.Epoch)
	}
}
