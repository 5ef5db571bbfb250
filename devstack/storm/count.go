package storm

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
)

var (
	// deviceID matches the harness's device ids in message texts.
	deviceID = regexp.MustCompile(`s\d+-gw\d+-d\d+`)
	// digestTitle is the notifier's digest title (en and zh templates).
	digestTitle = regexp.MustCompile(`(?:Digest: |告警汇总：)(?:(\d+) (?:devices? firing|台设备告警))?`)
	// outageTitle is the notifier's firing group_outage title (en): the
	// site and the devices folded in.
	outageTitle = regexp.MustCompile(`Group outage at site=(s\d+): (\d+)(?: of \d+)? devices? offline`)
)

// Chat stand-in codes that mean "too fast" (contracts/chat.md).
const (
	dingTalkTooFast = 410100
	feishuTooFast   = 11232
)

// receivers are the dev stack's chat robots.
var receivers = []string{devstack.ReceiverDingTalk, devstack.ReceiverFeishu}

// count fills in what the streams and the chat stand-ins show: alerts,
// messages per receiver, rate-limit answers, lost and false devices.
//
// A device expected offline is accounted for at a receiver when
//
//   - a firing device_offline alert of that receiver covering it has a
//     delivered DeliveryEvent (an alert folded into a digest gets its
//     own), or the device's alert was folded into a group_outage (an
//     inhibited copy naming the group_outage's fingerprint) whose firing
//     alert of that receiver was delivered; and
//   - the messages that robot accepted name it, or the totals of its
//     site's group_outage messages and of the digests cover every expected
//     device of the site not named.
//
// It is lost when some receiver did not account for it. A device is false
// when some device_offline alert (inhibited copies included) fired for it
// though it never stayed offline for the grace.
func (f *fleet) count(ctx context.Context, res *Result, expected map[string]bool, since time.Time) error {
	var err error
	if f.alerts, err = readAll[events.AlertEvent](ctx, f.js, events.StreamAlerts); err != nil {
		return err
	}
	deliveries, err := readAll[events.DeliveryEvent](ctx, f.js, events.StreamDeliveries)
	if err != nil {
		return err
	}
	res.Alerts = len(f.alerts)
	f.delivered = map[string]bool{}
	for _, d := range deliveries {
		if d.Outcome == events.OutcomeDelivered {
			f.delivered[d.AlertID+"\x00"+d.Receiver] = true
		}
	}
	// The delivered group_outage alerts, by receiver and fingerprint.
	outages := map[string]bool{}
	for _, a := range f.alerts {
		if a.Kind == events.AlertGroupOutage && a.Status == events.StatusFiring && f.delivered[a.ID+"\x00"+a.Receiver] {
			outages[a.Receiver+"\x00"+a.Fingerprint] = true
		}
	}
	reached := map[string]map[string]bool{}
	folded := map[string]bool{}
	for _, r := range receivers {
		reached[r] = map[string]bool{}
	}
	firing, flapping := map[string]bool{}, map[string]bool{}
	// flapGroups is the most devices firing per device_flapping group and
	// receiver: a group's notifications list at most 100 devices.
	flapGroups := map[string]int{}
	res.Kinds = map[string]int{}
	for _, a := range f.alerts {
		if a.Status != events.StatusFiring {
			continue
		}
		kind := string(a.Kind)
		switch {
		case a.Inhibited:
			kind += " inhibited"
		case a.Silenced:
			kind += " silenced"
		}
		res.Kinds[kind]++
		if a.Kind == events.AlertDeviceFlapping {
			k := a.Receiver + "\x00" + a.GroupKey
			flapGroups[k] = max(flapGroups[k], a.FiringTotal, a.DevicesTotal)
		}
		for _, d := range a.Devices {
			if d.Status != events.StatusFiring {
				continue
			}
			switch a.Kind {
			case events.AlertDeviceFlapping:
				flapping[d.DeviceID] = true
			case events.AlertDeviceOffline:
				firing[d.DeviceID] = true
				if reached[a.Receiver] == nil {
					continue
				}
				switch {
				case a.Inhibited && outages[a.Receiver+"\x00"+a.InhibitedBy]:
					reached[a.Receiver][d.DeviceID] = true
					folded[d.DeviceID] = true
				case !a.Inhibited && !a.Silenced && f.delivered[a.ID+"\x00"+a.Receiver]:
					reached[a.Receiver][d.DeviceID] = true
				}
			}
		}
	}
	res.Firing, res.Flapping = len(firing), len(flapping)
	for _, r := range receivers {
		n := 0
		for k, v := range flapGroups {
			if strings.HasPrefix(k, r+"\x00") {
				n += v
			}
		}
		res.Flapping = max(res.Flapping, n)
	}
	res.Late = len(f.late)
	for d := range firing {
		if !expected[d] && !f.late[d] {
			res.False++
		}
	}

	index := make(map[string]int, len(f.ids))
	for i, id := range f.ids {
		index[id] = i
	}
	res.Messages, res.Digests, res.FirstWindow = map[string]int{}, map[string]int{}, map[string]int{}
	lost := map[string]bool{}
	byTotal := map[string]bool{}
	for _, r := range receivers {
		msgs := f.st.Chat().MessagesTo(r)
		res.Messages[r] = len(msgs)
		named := map[string]bool{}
		digestFiring := 0
		outageTotal := map[string]int{}
		for _, m := range msgs {
			if !m.At.Before(since) && m.At.Sub(since) <= firstWindow {
				res.FirstWindow[r]++
			}
			if g := digestTitle.FindStringSubmatch(m.Title); g != nil {
				res.Digests[r]++
				n, _ := strconv.Atoi(g[1])
				digestFiring += n
			}
			if g := outageTitle.FindStringSubmatch(m.Title); g != nil {
				n, _ := strconv.Atoi(g[2])
				outageTotal[g[1]] = max(outageTotal[g[1]], n)
			}
			for _, id := range deviceID.FindAllString(m.Title+"\n"+m.Text, -1) {
				named[id] = true
			}
		}
		// Expected devices reached but not named, per site.
		unnamed := map[string][]string{}
		for d := range expected {
			switch {
			case !reached[r][d]:
				lost[d] = true
			case !named[d]:
				site := f.siteOf(index[d])
				unnamed[site] = append(unnamed[site], d)
			}
		}
		sites := make([]string, 0, len(unnamed))
		for s := range unnamed {
			sites = append(sites, s)
		}
		slices.Sort(sites)
		for _, s := range sites {
			ds := unnamed[s]
			slices.Sort(ds)
			// The site's group_outage total covers its first devices, the
			// digests' totals the next; the rest is lost.
			cover := min(outageTotal[s], len(ds))
			for _, d := range ds[:cover] {
				byTotal[d] = true
			}
			rest := ds[cover:]
			take := min(digestFiring, len(rest))
			digestFiring -= take
			for _, d := range rest[take:] {
				lost[d] = true
			}
		}
	}
	res.Lost = len(lost)
	for d := range folded {
		if byTotal[d] && !lost[d] {
			res.Folded++
		}
	}
	for _, rj := range f.st.Chat().Rejections() {
		if rj.HTTPStatus == http.StatusTooManyRequests ||
			(rj.Channel == chatsim.DingTalk && rj.Code == dingTalkTooFast) || (rj.Channel == chatsim.Feishu && rj.Code == feishuTooFast) {
			res.RateLimited++
		} else {
			res.Rejected++
		}
	}
	stored, err := streamCount(ctx, f.js, events.StreamPresence)
	if err != nil {
		return err
	}
	res.Stored = stored
	return nil
}

// nodeChecks adds the node-silent scenario's checks: one node_silent
// alert for node 2 per receiver in the scenario, firing and resolved,
// delivered, counting every device of node 2; no device_offline alert
// decided for a device of node 2 while it was silent. node_silent alerts
// outside the scenario — a node reported silent while the fleet connected,
// because ingest fell further behind the broker than the (compressed)
// silence threshold on a busy machine — are reported, not checked.
func (f *fleet) nodeChecks(res *Result, since time.Time) {
	onNode2 := 0
	node2 := map[string]bool{}
	for i, id := range f.ids {
		if f.onNode2(i) {
			onNode2++
			node2[id] = true
		}
	}
	start := since.UnixMilli()
	outside := 0
	for _, r := range receivers {
		var fired, resolved, total int
		for _, a := range f.alerts {
			if a.Kind != events.AlertNodeSilent || a.Receiver != r || !f.delivered[a.ID+"\x00"+r] {
				continue
			}
			if a.GroupLabels[labels.Node] != f.node2 || a.CreatedAtMS < start {
				if a.Status == events.StatusFiring {
					outside++
				}
				continue
			}
			if a.Status == events.StatusFiring {
				fired++
				total = a.DevicesTotal
			} else {
				resolved++
			}
		}
		res.Checks = append(res.Checks,
			check(fired == 1 && total == onNode2, "node_silent firing delivered to %s: %d (want 1), covering %s devices (want %s)",
				r, fired, groupThousands(int64(total)), groupThousands(int64(onNode2))),
			check(resolved == 1, "node_silent resolved delivered to %s: %d (want 1)", r, resolved))
	}
	whileSilent := 0
	for _, a := range f.alerts {
		if a.Kind != events.AlertDeviceOffline || a.Status != events.StatusFiring || a.CreatedAtMS < f.silentAt || a.CreatedAtMS >= f.backAt {
			continue
		}
		for _, d := range a.Devices {
			if node2[d.DeviceID] && d.Status == events.StatusFiring {
				whileSilent++
			}
		}
	}
	res.Checks = append(res.Checks, check(whileSilent == 0, "device_offline alerts for the silent node's devices while it was silent: %d (want 0)", whileSilent))
	res.Remarks = append(res.Remarks, fmt.Sprintf("node_silent firing notifications outside the scenario (a node reported silent while the fleet connected: ingest heard nothing for --node-silent-after, a stall on a busy machine): %d", outside))
}

// Archive tables and the streams they hold (services/archiver/schema).
var tables = []struct{ table, stream string }{
	{"presence_events", events.StreamPresence},
	{"alerts", events.StreamAlerts},
	{"deliveries", events.StreamDeliveries},
}

func openClickHouse(addr string) (clickhouse.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 5 * time.Second})
}

// countRows counts each archive table with FINAL (after dedup) against its
// stream's message count.
func countRows(ctx context.Context, f *fleet, addr, db string, res *Result) error {
	conn, err := openClickHouse(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	res.RowsChecked = true
	res.Rows, res.Want = map[string]uint64{}, map[string]uint64{}
	for _, t := range tables {
		want, err := streamCount(ctx, f.js, t.stream)
		if err != nil {
			return err
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+t.table+" FINAL").Scan(&n); err != nil {
			return fmt.Errorf("count %s.%s: %w", db, t.table, err)
		}
		res.Rows[t.table], res.Want[t.table] = n, want
	}
	return nil
}

func dropDatabase(addr, db string) {
	conn, err := openClickHouse(addr)
	if err != nil {
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db)
}
