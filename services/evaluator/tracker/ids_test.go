package tracker

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"unsafe"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

func TestIDHasherMatchesContentID(t *testing.T) {
	tr := newTracker(t)
	rng := rand.New(rand.NewPCG(5, 5))
	for range 2000 {
		var parts [3]string
		for i := range parts {
			b := make([]byte, rng.IntN(12))
			for j := range b {
				b[j] = []byte{0, 1, 2, 'a', '{', 0xff, '"'}[rng.IntN(7)]
			}
			parts[i] = string(b)
		}
		if got, want := tr.fingerprint(events.AlertKind(parts[0]), parts[1]), events.ContentID(parts[0], parts[1]); got != want {
			t.Fatalf("fingerprint(%q, %q) = %s, want %s", parts[0], parts[1], got, want)
		}
		start, end, seq := rng.Int64()-rng.Int64(), rng.Int64N(1e13), rng.Uint32()
		got := tr.notificationID(parts[0], parts[1], events.AlertStatus(parts[2]), start, end, seq)
		want := events.ContentID("alert.v1", parts[0], parts[1], parts[2], strconv.FormatInt(start, 10),
			strconv.FormatInt(end, 10), strconv.FormatUint(uint64(seq), 10))
		if got != want {
			t.Fatalf("notificationID = %s, want %s", got, want)
		}
	}
}

// TestScopedNotificationID: a scope is one more part after "alert.v1", and
// different scopes give different ids for the same notification.
func TestScopedNotificationID(t *testing.T) {
	tr := newTracker(t)
	unscoped := tr.notificationID("ops", "fp", events.StatusFiring, 10, 0, 1)
	tr.idScope = "l1of4"
	got := tr.notificationID("ops", "fp", events.StatusFiring, 10, 0, 1)
	if want := events.ContentID("alert.v1", "l1of4", "ops", "fp", "firing", "10", "0", "1"); got != want {
		t.Fatalf("scoped notificationID = %s, want %s", got, want)
	}
	tr.idScope = "l2of4"
	if other := tr.notificationID("ops", "fp", events.StatusFiring, 10, 0, 1); other == got || other == unscoped || got == unscoped {
		t.Fatalf("scopes do not separate ids: %s %s %s", unscoped, got, other)
	}
}

// TestStateSizes pins the per-device and per-timer sizes the memory budget
// rests on.
func TestStateSizes(t *testing.T) {
	if s := unsafe.Sizeof(device{}); s != 56 {
		t.Errorf("device is %d bytes, want 56", s)
	}
	if s := unsafe.Sizeof(timer{}); s != 24 {
		t.Errorf("timer is %d bytes, want 24", s)
	}
}

func TestIDArena(t *testing.T) {
	var a idArena
	long := string(make([]byte, maxIDLen))
	refs := map[idRef]string{}
	for i := range 50_000 {
		s := strconv.Itoa(i) + "/dev ü"
		if i%10_000 == 0 {
			s = long[:idChunk/8+i/10_000]
		}
		refs[a.store(s)] = s
	}
	refs[a.store(long)] = long
	for r, s := range refs {
		if got := a.get(r); got != s {
			t.Fatalf("get(%x) = %q, want %q", r, got[:min(len(got), 20)], s[:min(len(s), 20)])
		}
	}
}
