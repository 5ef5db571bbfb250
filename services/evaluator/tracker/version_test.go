package tracker

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// versioned builds a valid event of source src.
func versioned(t testing.TB, src string, e events.PresenceEvent) *events.PresenceEvent {
	t.Helper()
	e.Source = src
	if e.ReceivedAtMS == 0 {
		e.ReceivedAtMS = e.BrokerTSMS + 7
	}
	out, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return &out
}

// awsConn is an AWS IoT lifecycle connected event (no connected_at, the
// versionNumber as ConnVersion) at offset at, stamped by broker node.
func awsConn(t testing.TB, dev, node string, version, at int64) *events.PresenceEvent {
	return versioned(t, "aws_iot", events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: node,
		BrokerTSMS: t0 + at, ConnVersion: version})
}

// awsDisc is an AWS IoT lifecycle disconnected event.
func awsDisc(t testing.TB, dev, node string, version, at int64, reason events.Reason) *events.PresenceEvent {
	return versioned(t, "aws_iot", events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: node,
		Reason: reason, RawReason: string(reason), BrokerTSMS: t0 + at, ConnVersion: version})
}

// nbirth is a Sparkplug NBIRTH as ingest makes it: ConnVersion bdSeq+1,
// connected_at and broker time the payload timestamp (offset at).
func nbirth(t testing.TB, dev string, bdSeq, at int64) *events.PresenceEvent {
	return versioned(t, events.SourceSparkplug, events.PresenceEvent{DeviceID: dev, Kind: events.KindConnected, Node: "hivemq",
		BrokerTSMS: t0 + at, ConnectedAtMS: t0 + at, ConnVersion: bdSeq + 1})
}

// ndeath is a Sparkplug NDEATH: ConnVersion bdSeq+1, no connected_at,
// broker time the receive time (offset at).
func ndeath(t testing.TB, dev string, bdSeq, at int64) *events.PresenceEvent {
	return versioned(t, events.SourceSparkplug, events.PresenceEvent{DeviceID: dev, Kind: events.KindDisconnected, Node: "hivemq",
		Reason: events.ReasonOther, RawReason: "NDEATH", BrokerTSMS: t0 + at, ConnVersion: bdSeq + 1})
}

func TestVersionedConnections(t *testing.T) {
	const (
		keepalive = events.ReasonKeepaliveTimeout
		discarded = events.ReasonDiscarded
		other     = events.ReasonOther
	)
	tests := []scenario{
		{
			name: "aws: an older version's disconnect after a newer connect is stale",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws", 7, 0)),
					ev(awsConn(t, "d", "aws", 8, 5_000)),
					ev(awsDisc(t, "d", "aws", 7, 6_000, keepalive)),
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "aws", ConnVersion: 8, SinceMS: t0 + 5_000},
			stats: func(s Stats) bool { return s.Stale == 1 && s.Outages == 0 && s.Supersedes == 1 },
		},
		{
			name: "aws: the version beats broker clocks (the newer connection stamped earlier)",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws-b", 8, 1_000)), // newer, from a broker 4 s behind
					ev(awsConn(t, "d", "aws-a", 7, 5_000)), // older, arriving late
					ev(awsDisc(t, "d", "aws-a", 7, 6_000, discarded)),
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "aws-b", ConnVersion: 8, SinceMS: t0 + 1_000},
			stats: func(s Stats) bool { return s.Stale == 2 && s.Handovers == 0 },
		},
		{
			name: "aws: a connect again with the same version is a duplicate, also after its disconnect",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws", 3, 0)),
					ev(awsConn(t, "d", "aws", 3, 0)),
					ev(awsConn(t, "d", "aws", 3, 2_000)), // redelivered with another timestamp
					ev(awsDisc(t, "d", "aws", 3, 10_000, keepalive)),
					ev(awsConn(t, "d", "aws", 3, 0)),
					ev(awsDisc(t, "d", "aws", 3, 10_000, keepalive)),
					tick(40_000, "default firing d since=10000"),
				}
			},
			want:  DeviceState{DeviceID: "d", Node: "aws", ConnVersion: 3, SinceMS: t0 + 10_000, Reason: keepalive, Alerting: true},
			stats: func(s Stats) bool { return s.Duplicates == 4 && s.Outages == 1 && s.Supersedes == 0 },
		},
		{
			name: "aws: a newer version's disconnect whose connect was lost opens and ends it",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws", 3, 0)),
					ev(awsDisc(t, "d", "aws", 5, 20_000, keepalive)), // 4 and 5's connect never arrived
					ev(awsConn(t, "d", "aws", 5, 15_000)),            // the lost connect, late: a duplicate
					ev(awsConn(t, "d", "aws", 4, 10_000)),
					ev(awsDisc(t, "d", "aws", 3, 9_000, keepalive)),
					tick(50_000, "default firing d since=20000"),
					ev(awsConn(t, "d", "aws", 6, 60_000), "default resolved d since=20000 until=60000"),
				}
			},
			want: DeviceState{DeviceID: "d", Online: true, Node: "aws", ConnVersion: 6, SinceMS: t0 + 60_000},
			stats: func(s Stats) bool {
				return s.Stale == 2 && s.Duplicates == 1 && s.Outages == 1 && s.Fired == 1 && s.Resolved == 1
			},
		},
		{
			name: "aws: a device first seen by its disconnect",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsDisc(t, "d", "aws", 9, 1_000, keepalive)),
					ev(awsConn(t, "d", "aws", 9, 0)),
					tick(31_000, "default firing d since=1000"),
				}
			},
			want: DeviceState{DeviceID: "d", Node: "aws", ConnVersion: 9, SinceMS: t0 + 1_000, Reason: keepalive, Alerting: true},
		},
		{
			name: "aws: a takeover (DUPLICATE_CLIENTID) never means offline, in both orders",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws", 1, 0)),
					ev(awsDisc(t, "d", "aws", 1, 5_000, discarded)),
					ev(awsConn(t, "d", "aws", 2, 5_000)),
					ev(awsConn(t, "d", "aws", 3, 9_000)),
					ev(awsDisc(t, "d", "aws", 2, 9_000, discarded)),
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "aws", ConnVersion: 3, SinceMS: t0 + 9_000},
			stats: func(s Stats) bool { return s.Handovers == 1 && s.Stale == 1 && s.Outages == 0 },
		},
		{
			name: "aws: versionNumber 0 (unknown) first, then versions: broker time bridges them",
			steps: func(t *testing.T) []step {
				return []step{
					ev(awsConn(t, "d", "aws", 0, 0)),
					ev(awsDisc(t, "d", "aws", 0, 1_000, keepalive)),
					ev(awsConn(t, "d", "aws", 1, 2_000)),
					ev(awsDisc(t, "d", "aws", 0, 1_000, keepalive)), // duplicate of the first disconnect
					ev(awsConn(t, "d", "aws", 0, 0)),                // and of the first connect
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "aws", ConnVersion: 1, SinceMS: t0 + 2_000},
			stats: func(s Stats) bool { return s.Blips == 1 && s.Stale == 2 },
		},
		{
			name: "sparkplug: an NDEATH with another bdSeq than the last NBIRTH's is ignored",
			steps: func(t *testing.T) []step {
				return []step{
					ev(nbirth(t, "d", 4, 0)),
					ev(nbirth(t, "d", 5, 3_000)),   // reconnect before the broker noticed the old session died
					ev(ndeath(t, "d", 4, 3_100)),   // its Will, late
					ev(ndeath(t, "d", 2, 3_200)),   // much older
					ev(ndeath(t, "d", 133, 3_300)), // 128 ahead: undefined in serial arithmetic, never newer
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "hivemq", ConnectedAtMS: t0 + 3_000, ConnVersion: 6, SinceMS: t0 + 3_000},
			stats: func(s Stats) bool { return s.Stale == 3 && s.Outages == 0 },
		},
		{
			name: "sparkplug: the NDEATH of the last NBIRTH is an outage",
			steps: func(t *testing.T) []step {
				return []step{
					ev(nbirth(t, "d", 4, 0)),
					ev(ndeath(t, "d", 4, 10_000)),
					ev(ndeath(t, "d", 4, 10_000)),
					tick(40_000, "default firing d since=10000"),
				}
			},
			want:  DeviceState{DeviceID: "d", Node: "hivemq", ConnectedAtMS: t0, ConnVersion: 5, SinceMS: t0 + 10_000, Reason: other, Alerting: true},
			stats: func(s Stats) bool { return s.Duplicates == 1 && s.Outages == 1 },
		},
		{
			name: "sparkplug: bdSeq wraps from 255 to 0",
			steps: func(t *testing.T) []step {
				return []step{
					ev(nbirth(t, "d", 255, 0)),
					ev(nbirth(t, "d", 0, 5_000)),
					ev(ndeath(t, "d", 255, 5_100)), // the old session's death: stale
					tick(50_000),
					ev(ndeath(t, "d", 0, 60_000)),
					ev(ndeath(t, "d", 1, 61_000)), // a session whose NBIRTH was lost: 1 is newer than 0
					tick(91_000, "default firing d since=61000"),
				}
			},
			want:  DeviceState{DeviceID: "d", Node: "hivemq", ConnVersion: 2, SinceMS: t0 + 61_000, Reason: other, Alerting: true},
			stats: func(s Stats) bool { return s.Stale == 1 && s.Outages == 2 && s.Blips == 1 },
		},
		{
			name: "sparkplug: a rebirth (same bdSeq, new NBIRTH) keeps the session, whose NDEATH still counts",
			steps: func(t *testing.T) []step {
				return []step{
					ev(nbirth(t, "d", 9, 0)),
					ev(nbirth(t, "d", 9, 20_000)), // rebirth requested by a host application
					ev(nbirth(t, "d", 9, 0)),      // the first NBIRTH redelivered: stale
					ev(ndeath(t, "d", 9, 30_000)),
					ev(nbirth(t, "d", 9, 20_000)), // duplicate after the death
					tick(60_000, "default firing d since=30000"),
				}
			},
			want:  DeviceState{DeviceID: "d", Node: "hivemq", ConnectedAtMS: t0 + 20_000, ConnVersion: 10, SinceMS: t0 + 30_000, Reason: other, Alerting: true},
			stats: func(s Stats) bool { return s.Supersedes == 1 && s.Stale == 1 && s.Duplicates == 1 && s.Outages == 1 },
		},
		{
			name: "sparkplug: a restart that reuses the bdSeq is a new session (its NBIRTH is later)",
			steps: func(t *testing.T) []step {
				return []step{
					ev(nbirth(t, "d", 0, 0)),
					ev(ndeath(t, "d", 0, 10_000)),
					ev(nbirth(t, "d", 0, 20_000)),
					tick(100_000),
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "hivemq", ConnectedAtMS: t0 + 20_000, ConnVersion: 1, SinceMS: t0 + 20_000},
			stats: func(s Stats) bool { return s.Blips == 1 },
		},
		{
			name: "sparkplug: an NDEATH first (its NBIRTH lost): its late NBIRTH and older ones change nothing",
			steps: func(t *testing.T) []step {
				return []step{
					ev(ndeath(t, "d", 7, 10_000)),
					ev(nbirth(t, "d", 7, 0)),      // the same session's birth: a duplicate
					ev(nbirth(t, "d", 6, -9_000)), // an older session's, redelivered: stale
					tick(40_000, "default firing d since=10000"),
					ev(nbirth(t, "d", 8, 5_000), "default resolved d since=10000 until=10000"), // a newer session, whatever the edge clock says
				}
			},
			want:  DeviceState{DeviceID: "d", Online: true, Node: "hivemq", ConnectedAtMS: t0 + 5_000, ConnVersion: 9, SinceMS: t0 + 5_000},
			stats: func(s Stats) bool { return s.Stale == 1 && s.Duplicates == 1 },
		},
	}
	runScenarios(t, tests)
}

func TestSeqNewer(t *testing.T) {
	for _, tc := range []struct {
		a, b uint8
		want bool
	}{
		{1, 0, true}, {0, 255, true}, {127, 0, true}, {128, 0, false}, {0, 128, false},
		{0, 1, false}, {255, 0, false}, {5, 5, false}, {100, 229, true}, {229, 100, false}, {100, 228, false},
	} {
		if got := seqNewer(tc.a, tc.b); got != tc.want {
			t.Errorf("seqNewer(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestVersionedSnapshot round-trips devices of every connection kind.
func TestVersionedSnapshot(t *testing.T) {
	tr := newTracker(t)
	for _, e := range []*events.PresenceEvent{
		awsConn(t, "aws-1", "aws", 1<<40, 0),
		awsConn(t, "aws-2", "aws", 3, 1_000),
		awsDisc(t, "aws-2", "aws", 3, 2_000, events.ReasonKeepaliveTimeout),
		nbirth(t, "spb-1", 255, 3_000),
		ndeath(t, "spb-2", 17, 4_000),
		conn(t, "emqx-1", "n1", 5_000),
	} {
		tr.Apply(Event{e})
	}
	snap, err := tr.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	back := newTracker(t)
	if err := back.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if got, want := back.Devices(), tr.Devices(); len(got) != 5 || !equalStates(got, want) {
		t.Fatalf("restored\n%+v\nwant\n%+v", got, want)
	}
	again, err := back.MarshalSnapshot()
	if err != nil || string(again) != string(snap) {
		t.Fatalf("the snapshot does not round-trip (%v)", err)
	}
	// The versions still pair: a stale NDEATH and AWS disconnect are ignored.
	for _, x := range []*events.PresenceEvent{ndeath(t, "spb-1", 254, 6_000), awsDisc(t, "aws-1", "aws", 1<<40-1, 6_000, events.ReasonKeepaliveTimeout)} {
		back.Apply(Event{x})
	}
	if s := back.Stats(); s.Stale != 2 {
		t.Fatalf("stats after restore %+v", s)
	}
}

func equalStates(a, b []DeviceState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRestoreSnapshotV1 restores testdata/snapshot-v1.bin, written by the
// version 1 format (no connection versions, flap times in whole seconds)
// from genInputs(rand.NewPCG(21, 22), 300) into richTracker.
func TestRestoreSnapshotV1(t *testing.T) {
	old, err := os.ReadFile("testdata/snapshot-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if old[len(snapshotMagic)] != 1 {
		t.Fatalf("testdata/snapshot-v1.bin is version %d", old[len(snapshotMagic)])
	}
	tr := richTracker(t)
	if err := tr.RestoreSnapshot(old); err != nil {
		t.Fatal(err)
	}
	fresh := richTracker(t)
	for _, x := range genInputs(t, rand.New(rand.NewPCG(21, 22)), 300) {
		fresh.Apply(x)
	}
	if !equalStates(tr.Devices(), fresh.Devices()) || tr.Stats() != fresh.Stats() || tr.Len() != 24 {
		t.Fatalf("restored\n%+v\n%+v\nwant\n%+v\n%+v", tr.Devices(), tr.Stats(), fresh.Devices(), fresh.Stats())
	}
	for i := range tr.devs {
		if ft := tr.devs[i].flapTime(); ft == 0 || ft%1000 != 0 {
			t.Fatalf("device %d: flap time %d is not whole seconds", i, ft)
		}
	}
	snap, err := tr.MarshalSnapshot()
	if err != nil || snap[len(snapshotMagic)] != snapshotVersion {
		t.Fatalf("rewritten as version %d (%v)", snap[len(snapshotMagic)], err)
	}
	back := richTracker(t)
	if err := back.RestoreSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	end := Tick{Now: time.UnixMilli(t0 + 1e8)}
	if a, b := mustJSON(t, tr.Apply(end)), mustJSON(t, back.Apply(end)); a != b {
		t.Fatalf("the rewritten snapshot decides otherwise:\n%s\n%s", a, b)
	}
}
