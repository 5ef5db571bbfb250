package notifier

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// deviceAlert is what the evaluator emits for one device and one receiver
// (tracker.appendAlerts), with a site label on the device.
func deviceAlert(receiver, dev string, status events.AlertStatus, since, until, created time.Time) events.AlertEvent {
	a := events.AlertEvent{
		Fingerprint: events.ContentID("device_offline", dev), Receiver: receiver, Status: status,
		Kind: events.AlertDeviceOffline, Severity: events.SeverityWarning, GroupKey: "device:" + dev,
		GroupLabels: map[string]string{"device_id": dev},
		Devices: []events.AlertDevice{{DeviceID: dev, Status: status, Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout,
			SinceMS: since.UnixMilli(), Labels: map[string]string{"site": "sz-01"}}},
		DevicesTotal: 1, StartsAtMS: since.UnixMilli(), CreatedAtMS: created.UnixMilli(),
	}
	if status == events.StatusResolved {
		a.Devices[0].UntilMS, a.EndsAtMS = until.UnixMilli(), until.UnixMilli()
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

// publishAll stores alerts in ALERTS with their ids as Nats-Msg-Id,
// asynchronously, and returns the last stream sequence.
func (h *harness) publishAll(alerts []events.AlertEvent) uint64 {
	h.t.Helper()
	var last uint64
	for len(alerts) > 0 {
		chunk := alerts[:min(len(alerts), 1000)]
		alerts = alerts[len(chunk):]
		var futures []jetstream.PubAckFuture
		for _, a := range chunk {
			data, err := json.Marshal(a)
			if err != nil {
				h.t.Fatal(err)
			}
			m := nats.NewMsg(a.Subject())
			m.Data = data
			m.Header.Set(events.HeaderMsgID, a.ID)
			f, err := h.js.PublishMsgAsync(m)
			if err != nil {
				h.t.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				last = max(last, ack.Sequence)
			case err := <-f.Err():
				h.t.Fatal(err)
			case <-time.After(20 * time.Second):
				h.t.Fatal("publish ack timed out")
			}
		}
	}
	return last
}

var (
	digestZh   = regexp.MustCompile(`告警汇总：(?:(\d+) 台设备告警)?(?:，)?(?:(\d+) 台设备恢复)?$`)
	digestEn   = regexp.MustCompile(`Digest: (?:(\d+) devices? firing)?(?:, )?(?:(\d+) devices? resolved)?$`)
	singleFire = regexp.MustCompile(`(?:设备离线：|Device offline: )(\S+)`)
	singleRes  = regexp.MustCompile(`(?:已恢复：|Resolved: )(\S+) (?:重新上线|back online)`)
)

// coverage counts, from the messages a robot accepted, the devices
// reported firing and resolved: by id in single messages, by total in
// digests.
type coverage struct {
	firing, resolved      map[string]bool
	digestFire, digestRes int
	digests, singles      int
}

func cover(t *testing.T, msgs []chatsim.Message) coverage {
	t.Helper()
	c := coverage{firing: map[string]bool{}, resolved: map[string]bool{}}
	atoi := func(s string) int {
		if s == "" {
			return 0
		}
		n, _ := strconv.Atoi(s)
		return n
	}
	for _, m := range msgs {
		if !strings.Contains(m.Title, "告警") {
			t.Fatalf("message without the keyword: %q", m.Title)
		}
		switch {
		case digestZh.MatchString(m.Title):
			g := digestZh.FindStringSubmatch(m.Title)
			c.digestFire += atoi(g[1])
			c.digestRes += atoi(g[2])
			c.digests++
		case digestEn.MatchString(m.Title):
			g := digestEn.FindStringSubmatch(m.Title)
			c.digestFire += atoi(g[1])
			c.digestRes += atoi(g[2])
			c.digests++
		case singleRes.MatchString(m.Title):
			c.resolved[singleRes.FindStringSubmatch(m.Title)[1]] = true
			c.singles++
		case singleFire.MatchString(m.Title):
			c.firing[singleFire.FindStringSubmatch(m.Title)[1]] = true
			c.singles++
		default:
			t.Fatalf("unrecognised message title %q", m.Title)
		}
	}
	return c
}

// maxInWindow is the most messages within any window of length per.
func maxInWindow(msgs []chatsim.Message, per time.Duration) int {
	best := 0
	for i := range msgs {
		n := 0
		for j := i; j < len(msgs) && msgs[j].At.Sub(msgs[i].At) < per; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

// TestStorm: 5,000 devices of one site drop within about 10 s and recover
// 5 minutes later; the evaluator's one alert per device per receiver goes
// to a strict DingTalk robot and a strict Feishu bot. No rate-limit answer
// comes back, every device is accounted for in a delivered message (by id
// or in a digest's total), and each robot stays within its limits.
func TestStorm(t *testing.T) {
	const devices = 5000
	// The clock runs 10x: the 10,000 alerts of a wave take about a second
	// to publish, i.e. the devices drop within about 10 simulated seconds.
	h := newHarnessScaled(t, 10)
	cfg := h.config()
	cfg.Receivers[0].DingTalk.AtMobiles = nil
	h.runLevel(cfg, slog.LevelWarn)

	ids := map[string]bool{}
	wave := func(status events.AlertStatus, since time.Time) uint64 {
		var alerts []events.AlertEvent
		for i := range devices {
			dev := fmt.Sprintf("sz01-%05d", i)
			now := h.clock.Now()
			if status == events.StatusFiring {
				since = now
			}
			for _, r := range []string{"ops-dt", "ops-fs"} {
				a := deviceAlert(r, dev, status, since, now, now)
				ids[a.ID] = true
				alerts = append(alerts, a)
			}
		}
		return h.publishAll(alerts)
	}
	start := h.clock.Now()
	seq := wave(events.StatusFiring, time.Time{})
	h.settled(seq)
	t.Logf("firing wave settled after %s simulated", h.clock.Now().Sub(start).Round(time.Second))

	h.clock.Advance(5 * time.Minute)
	seq = wave(events.StatusResolved, start)
	h.settled(seq)
	t.Logf("resolved wave settled after %s simulated", h.clock.Now().Sub(start).Round(time.Second))

	if rj := h.sim.Rejections(); len(rj) != 0 {
		t.Fatalf("%d rejections, first %+v", len(rj), rj[0])
	}
	for _, robot := range []struct {
		name   string
		limits map[time.Duration]int
	}{
		{"dt", map[time.Duration]int{time.Minute: chatsim.DingTalkPerMinute}},
		{"fs", map[time.Duration]int{time.Second: chatsim.FeishuPerSecond, time.Minute: chatsim.FeishuPerMinute}},
	} {
		msgs := h.sim.MessagesTo(robot.name)
		c := cover(t, msgs)
		t.Logf("%s: %d messages (%d single, %d digests)", robot.name, len(msgs), c.singles, c.digests)
		if got := len(c.firing) + c.digestFire; got != devices {
			t.Errorf("%s: %d firing devices reported (%d by id, %d in digests), want %d", robot.name, got, len(c.firing), c.digestFire, devices)
		}
		if got := len(c.resolved) + c.digestRes; got != devices {
			t.Errorf("%s: %d resolved devices reported (%d by id, %d in digests), want %d", robot.name, got, len(c.resolved), c.digestRes, devices)
		}
		for per, limit := range robot.limits {
			if n := maxInWindow(msgs, per); n > limit {
				t.Errorf("%s: %d messages within %s, limit %d", robot.name, n, per, limit)
			}
		}
		// A storm is a handful of messages, not thousands.
		if len(msgs) > 60 {
			t.Errorf("%s: %d messages for a two-wave storm", robot.name, len(msgs))
		}
	}

	// Every alert id has a final record, and it is "delivered".
	kv, err := h.js.KeyValue(t.Context(), DefaultConfig().Idempotency.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	recorded := 0
	for k := range lister.Keys() {
		if !ids[k] {
			t.Fatalf("unexpected record %q", k)
		}
		recorded++
	}
	if recorded != len(ids) {
		t.Fatalf("%d alerts recorded, want %d", recorded, len(ids))
	}
	for _, id := range []string{firstKey(ids), lastKey(ids)} {
		e, err := kv.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		var rec record
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Outcome != events.OutcomeDelivered {
			t.Fatalf("record %s: %s %v", id, e.Value(), err)
		}
	}
	// One DeliveryEvent per alert: every attempt succeeded.
	st, err := h.js.Stream(t.Context(), events.StreamDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(ids)) {
		t.Fatalf("%d delivery events, want %d", info.State.Msgs, len(ids))
	}
}

func firstKey(m map[string]bool) string {
	best := ""
	for k := range m {
		if best == "" || k < best {
			best = k
		}
	}
	return best
}

func lastKey(m map[string]bool) string {
	best := ""
	for k := range m {
		if k > best {
			best = k
		}
	}
	return best
}
