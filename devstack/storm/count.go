package storm

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
)

var (
	// deviceID matches the harness's device ids in message texts.
	deviceID = regexp.MustCompile(`s\d+-gw\d+-d\d+`)
	// digestTitle is the notifier's digest title (en and zh templates).
	digestTitle = regexp.MustCompile(`(?:Digest: |告警汇总：)(?:(\d+) (?:devices? firing|台设备告警))?`)
)

// Chat stand-in codes that mean "too fast" (contracts/chat.md).
const (
	dingTalkTooFast = 410100
	feishuTooFast   = 11232
)

// count fills in what the streams and the chat stand-ins show: alerts,
// messages per receiver, rate-limit answers, lost and false devices.
//
// A device expected offline is reached at a receiver when (a) a firing
// alert of that receiver covering it has a delivered DeliveryEvent (an
// alert folded into a digest gets its own), and (b) the messages that
// robot accepted name it, or their digest totals cover every expected
// device not named. It is lost when some receiver did not reach it.
func (f *fleet) count(ctx context.Context, res *Result, expected map[string]bool) error {
	alerts, err := readAll[events.AlertEvent](ctx, f.js, events.StreamAlerts)
	if err != nil {
		return err
	}
	deliveries, err := readAll[events.DeliveryEvent](ctx, f.js, events.StreamDeliveries)
	if err != nil {
		return err
	}
	res.Alerts = len(alerts)
	delivered := map[string]bool{}
	for _, d := range deliveries {
		if d.Outcome == events.OutcomeDelivered {
			delivered[d.AlertID+"\x00"+d.Receiver] = true
		}
	}
	receivers := []string{devstack.ReceiverDingTalk, devstack.ReceiverFeishu}
	reached := map[string]map[string]bool{}
	for _, r := range receivers {
		reached[r] = map[string]bool{}
	}
	firing := map[string]bool{}
	for _, a := range alerts {
		if a.Status != events.StatusFiring {
			continue
		}
		for _, d := range a.Devices {
			if d.Status != events.StatusFiring {
				continue
			}
			firing[d.DeviceID] = true
			if delivered[a.ID+"\x00"+a.Receiver] && reached[a.Receiver] != nil {
				reached[a.Receiver][d.DeviceID] = true
			}
		}
	}
	res.Firing = len(firing)
	res.Late = len(f.late)
	for d := range firing {
		if !expected[d] && !f.late[d] {
			res.False++
		}
	}

	res.Messages, res.Digests = map[string]int{}, map[string]int{}
	lost := map[string]bool{}
	for _, r := range receivers {
		msgs := f.st.Chat().MessagesTo(r)
		res.Messages[r] = len(msgs)
		named := map[string]bool{}
		digestFiring := 0
		for _, m := range msgs {
			if g := digestTitle.FindStringSubmatch(m.Title); g != nil {
				res.Digests[r]++
				n, _ := strconv.Atoi(g[1])
				digestFiring += n
			}
			for _, id := range deviceID.FindAllString(m.Title+"\n"+m.Text, -1) {
				named[id] = true
			}
		}
		unnamed := 0
		for d := range expected {
			if !reached[r][d] {
				lost[d] = true
			}
			if !named[d] {
				unnamed++
			}
		}
		// Devices neither named nor covered by a digest's total: count
		// them lost even when their delivery was recorded.
		if short := unnamed - digestFiring; short > 0 && short > len(lost) {
			for d := range expected {
				if len(lost) >= short {
					break
				}
				if !named[d] {
					lost[d] = true
				}
			}
		}
	}
	res.Lost = len(lost)
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
