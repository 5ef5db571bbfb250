package nodewatch_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/services/ingest/nodewatch"
)

var t0 = time.UnixMilli(1718000000000)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

func TestSilentAndBack(t *testing.T) {
	w := nodewatch.New(90 * time.Second)
	if _, back := w.Heard("n1", "0", at(0)); back {
		t.Fatal("first sign reported as back")
	}
	w.Heard("n2", "", at(0))
	w.Heard("n1", "30000", at(30))
	if got := w.Check(at(89)); got != nil {
		t.Fatalf("Check(89s) = %+v, want nothing", got)
	}
	want := []nodewatch.Change{{Node: "n2", Kind: nodewatch.KindSilent, At: at(90), LastHeard: at(0)}}
	if got := w.Check(at(90)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(90s) = %+v\nwant %+v", got, want)
	}
	if got := w.Check(at(100)); got != nil {
		t.Fatalf("a silence is reported once, got %+v", got)
	}
	want = []nodewatch.Change{{Node: "n1", Kind: nodewatch.KindSilent, At: at(120), LastHeard: at(30), Mark: "30000"}}
	if got := w.Check(at(120)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(120s) = %+v\nwant %+v", got, want)
	}
	got, back := w.Heard("n1", "150000", at(150))
	if wantBack := (nodewatch.Change{Node: "n1", Kind: nodewatch.KindBack, At: at(150), LastHeard: at(30), Mark: "150000"}); !back || got != wantBack {
		t.Fatalf("Heard after silence = %+v, %v\nwant %+v", got, back, wantBack)
	}
	if _, back := w.Heard("n1", "", at(151)); back {
		t.Fatal("back reported twice")
	}
	wantNodes := []nodewatch.Status{{Node: "n1", LastHeard: at(151), Mark: "150000"}, {Node: "n2", LastHeard: at(0), Silent: true}}
	if got := w.Nodes(); !reflect.DeepEqual(got, wantNodes) {
		t.Fatalf("Nodes = %+v\nwant %+v", got, wantNodes)
	}
}

// TestOldSignDoesNotRewind: a late event with an old time does not make a
// node look quieter than it is, but still ends a silence.
func TestOldSignDoesNotRewind(t *testing.T) {
	w := nodewatch.New(10 * time.Second)
	w.Heard("n", "", at(100))
	w.Heard("n", "", at(50))
	if got := w.Check(at(109)); got != nil {
		t.Fatalf("got %+v", got)
	}
	if got := w.Check(at(110)); len(got) != 1 || !got[0].LastHeard.Equal(at(100)) {
		t.Fatalf("got %+v", got)
	}
}

// TestSeed: nodes known from a previous run are reported silent when not
// heard within the threshold from the start, with their recorded last
// sign; one recorded silent is not reported again but comes back; a node
// heard before it is seeded keeps what was heard.
func TestSeed(t *testing.T) {
	w := nodewatch.New(90 * time.Second)
	w.Heard("live", "7", at(1000))
	w.Seed("live", at(0), "1", true, at(1000))
	w.Seed("quiet", at(500), "500000", false, at(1000))
	w.Seed("down", at(200), "200000", true, at(1000))
	w.Seed("skewed", at(1050), "", false, at(1000)) // recorded by a replica whose clock is ahead
	if got := w.Check(at(1089)); got != nil {
		t.Fatalf("Check before the threshold from the start = %+v", got)
	}
	want := []nodewatch.Change{
		{Node: "live", Kind: nodewatch.KindSilent, At: at(1090), LastHeard: at(1000), Mark: "7"},
		{Node: "quiet", Kind: nodewatch.KindSilent, At: at(1090), LastHeard: at(500), Mark: "500000"},
	}
	if got := w.Check(at(1090)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(1090s) = %+v\nwant %+v", got, want)
	}
	want = []nodewatch.Change{{Node: "skewed", Kind: nodewatch.KindSilent, At: at(1140), LastHeard: at(1050)}}
	if got := w.Check(at(1140)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(1140s) = %+v\nwant %+v", got, want)
	}
	got, back := w.Heard("down", "1200000", at(1200))
	if wantBack := (nodewatch.Change{Node: "down", Kind: nodewatch.KindBack, At: at(1200), LastHeard: at(200), Mark: "1200000"}); !back || got != wantBack {
		t.Fatalf("Heard(down) = %+v, %v\nwant %+v", got, back, wantBack)
	}
}

// TestHold: while ingest cannot hear anyone (its pipeline full, its broker
// connection down), silence does not count; it counts again from the last
// Hold, and a node already silent stays silent.
func TestHold(t *testing.T) {
	w := nodewatch.New(10 * time.Second)
	w.Heard("quiet", "", at(0))
	w.Heard("live", "", at(0))
	if got := w.Check(at(10)); len(got) != 2 {
		t.Fatalf("Check(10s) = %+v, want both silent", got)
	}
	w.Heard("live", "", at(11))
	w.Heard("late", "", at(11))
	// Ingest stalls from 12 s to 30 s: "live" and "late" send heartbeats
	// that wait in the broker's queue.
	w.Hold(at(12))
	w.Hold(at(30))
	if got := w.Check(at(39)); got != nil {
		t.Fatalf("Check(39s) after a stall that ended at 30s = %+v, want nothing", got)
	}
	w.Heard("live", "", at(31)) // its backlog arrives
	want := []nodewatch.Change{{Node: "late", Kind: nodewatch.KindSilent, At: at(40), LastHeard: at(11)}}
	if got := w.Check(at(40)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(40s) = %+v\nwant %+v", got, want)
	}
	if got, back := w.Heard("quiet", "", at(41)); !back || got.Kind != nodewatch.KindBack {
		t.Fatalf("a node silent before the hold stays silent until heard: %+v, %v", got, back)
	}
	w.Hold(at(5)) // an older hold does not delay anything
	want = []nodewatch.Change{{Node: "live", Kind: nodewatch.KindSilent, At: at(41), LastHeard: at(31)}}
	if got := w.Check(at(41)); !reflect.DeepEqual(got, want) {
		t.Fatalf("Check(41s) = %+v\nwant %+v", got, want)
	}
}
