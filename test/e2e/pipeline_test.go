// Package e2e holds fleetwatch's end-to-end tests: the whole pipeline over
// real components — embedded NATS, the EMQX-like MQTT broker with real paho
// devices, all four stages, the real ClickHouse server, and strict local
// DingTalk and Feishu servers.
package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"html"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/devstack/simulator"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
)

// A device id with every character that is awkward somewhere: "/" adds MQTT
// topic levels, "." "*" ">" and the space are special in NATS subjects, and
// unicode must survive ClickHouse and the chat templates.
const victimID = "plant 7/line.2*dev>α"

func TestOfflineAlertResolvedAndArchived(t *testing.T) {
	chAddr := clickHouseAddr(t)
	db := fmt.Sprintf("fleetwatch_e2e_%d", time.Now().UnixNano())

	cfg := devstack.DefaultConfig()
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.Grace = time.Second
	cfg.Tick = 100 * time.Millisecond
	cfg.Language = "en"
	cfg.Simulator.Devices = 0
	cfg.ClickHouseAddr = chAddr
	cfg.ClickHouseDatabase = db
	cfg.ArchiverBatchWait = 200 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := devstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start the stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("stack stopped with errors: %v", err)
		}
		dropDatabase(t, chAddr, db)
	})
	chat := st.Chat()

	// A bystander is replaced by a second connection with the same client
	// id: EMQX reports the old connection's disconnect (reason "discarded",
	// as the new one has clean_start), which must never become an alert.
	bystander := simulator.NewDevice(st.BrokerURL(), "site-a-gw-1", simulator.DeviceOptions{})
	mustConnect(t, bystander)
	successor := simulator.NewDevice(st.BrokerURL(), "site-a-gw-1", simulator.DeviceOptions{})
	mustConnect(t, successor)

	victim := simulator.NewDevice(st.BrokerURL(), victimID, simulator.DeviceOptions{})
	mustConnect(t, victim)
	killedAt := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatalf("kill the device: %v", err)
	}

	firing := waitForBoth(ctx, t, chat, "firing", func(m chatsim.Message) bool {
		return mentions(m, victimID) && strings.Contains(m.Title, "Device offline")
	})
	for _, m := range firing {
		assertSignedWithKeyword(t, m)
	}
	if held := time.Since(killedAt); held < cfg.Grace {
		t.Errorf("firing alert after %v, before the %v grace ended", held, cfg.Grace)
	}

	mustConnect(t, victim)
	resolved := waitForBoth(ctx, t, chat, "resolved", func(m chatsim.Message) bool {
		return mentions(m, victimID) && strings.Contains(m.Title, "Resolved")
	})
	for _, m := range resolved {
		assertSignedWithKeyword(t, m)
	}

	// Exactly one firing and one resolved per robot, and nothing about the
	// bystander whose session was only taken over.
	for _, m := range chat.Messages() {
		if mentions(m, "site-a-gw-1") {
			t.Errorf("%s got a message about the taken-over device: %s", m.Robot, m.Title)
		}
	}
	for _, robot := range []string{devstack.ReceiverDingTalk, devstack.ReceiverFeishu} {
		if got := len(chat.MessagesTo(robot)); got != 2 {
			t.Errorf("%s received %d messages, want 2 (firing, resolved)", robot, got)
		}
	}
	if rejected := chat.Rejections(); len(rejected) != 0 {
		t.Errorf("the chat servers rejected %d requests: %v", len(rejected), rejected)
	}

	// The history is in ClickHouse: the victim's two connects and one
	// disconnect, two alerts per receiver, and the deliveries.
	conn := openClickHouse(t, chAddr)
	for _, c := range []struct {
		query string
		args  []any
		want  uint64
	}{
		{"SELECT count() FROM %s.presence_events FINAL WHERE device_id = ? AND kind = 'connected'", []any{victimID}, 2},
		{"SELECT count() FROM %s.presence_events FINAL WHERE device_id = ? AND kind = 'disconnected' AND reason = 'closed'", []any{victimID}, 1},
		{"SELECT count() FROM %s.presence_events FINAL WHERE device_id = ? AND reason = 'discarded'", []any{"site-a-gw-1"}, 1},
		{"SELECT count() FROM %s.alerts FINAL WHERE has(device_ids, ?)", []any{victimID}, 4},
		{"SELECT count() FROM %s.deliveries FINAL WHERE outcome = 'delivered'", nil, 4},
		// Checked last, once everything above has landed.
		{"SELECT count() FROM %s.alerts FINAL WHERE has(device_ids, ?)", []any{"site-a-gw-1"}, 0},
	} {
		waitForCount(ctx, t, conn, fmt.Sprintf(c.query, db), c.args, c.want)
	}
}

// waitForBoth waits until both the DingTalk robot and the Feishu bot have a
// message matching match, and returns those two messages.
func waitForBoth(ctx context.Context, t *testing.T, chat *chatsim.Server, what string, match func(chatsim.Message) bool) []chatsim.Message {
	t.Helper()
	var found []chatsim.Message
	_, err := chat.WaitFor(ctx, func(ms []chatsim.Message) bool {
		found = found[:0]
		seen := map[string]bool{}
		for _, m := range ms {
			if match(m) && !seen[m.Robot] {
				seen[m.Robot] = true
				found = append(found, m)
			}
		}
		return seen[devstack.ReceiverDingTalk] && seen[devstack.ReceiverFeishu]
	})
	if err != nil {
		t.Fatalf("no %s message reached both robots: %v; messages: %s; rejections: %v", what, err, dump(chat.Messages()), chat.Rejections())
	}
	return found
}

func assertSignedWithKeyword(t *testing.T, m chatsim.Message) {
	t.Helper()
	if !m.Signed {
		t.Errorf("%s message %q was not signed", m.Robot, m.Title)
	}
	if !strings.Contains(string(m.Body), devstack.Keyword) {
		t.Errorf("%s message %q lacks the keyword %s", m.Robot, m.Title, devstack.Keyword)
	}
	if m.Bytes > 20000 {
		t.Errorf("%s message is %d bytes, over the 20000-byte limit", m.Robot, m.Bytes)
	}
}

// mentions reports whether a message names the device. The templates escape
// markup characters in ids (">" is "&gt;", which both chat apps render as ">").
func mentions(m chatsim.Message, deviceID string) bool {
	return strings.Contains(m.Text, deviceID) || strings.Contains(m.Text, html.EscapeString(deviceID))
}

func mustConnect(t *testing.T, d *simulator.Device) {
	t.Helper()
	if err := d.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.Connected() {
			d.Disconnect()
		}
	})
}

func dump(ms []chatsim.Message) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "\n  [%s] %s", m.Robot, m.Title)
	}
	return b.String()
}

// clickHouseAddr returns the ClickHouse native address (chtest: from
// FLEETWATCH_CLICKHOUSE_ADDR). When nothing answers there the test fails
// under CI and is skipped, with the reason, elsewhere.
func clickHouseAddr(t *testing.T) string {
	t.Helper()
	chtest.Open(t)
	return chtest.Addr()
}

func openClickHouse(t *testing.T, addr string) *sql.DB {
	t.Helper()
	db := clickhouse.OpenDB(&clickhouse.Options{Addr: []string{addr}})
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func dropDatabase(t *testing.T, addr, db string) {
	conn := clickhouse.OpenDB(&clickhouse.Options{Addr: []string{addr}})
	defer conn.Close()
	if _, err := conn.Exec("DROP DATABASE IF EXISTS " + db); err != nil {
		t.Logf("drop database %s: %v", db, err)
	}
}

func waitForCount(ctx context.Context, t *testing.T, db *sql.DB, query string, args []any, want uint64) {
	t.Helper()
	var got uint64
	for {
		err := db.QueryRowContext(ctx, query, args...).Scan(&got)
		if err == nil && got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s %v\n  = %d (err %v), want %d", query, args, got, err, want)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
