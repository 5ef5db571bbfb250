package sink_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
)

// golden decodes one of pkg/events' golden v1 files.
func golden[E any](t testing.TB, name string) E {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "pkg", "events", "testdata", "v1", name))
	if err != nil {
		t.Fatal(err)
	}
	var e E
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

// captureBatch records what Rows.AppendTo appends, column by column.
type captureBatch struct {
	driver.Batch
	cols map[int]*captureColumn
}

type captureColumn struct{ vals any }

func (c *captureColumn) Append(v any) error    { c.vals = v; return nil }
func (c *captureColumn) AppendRow(v any) error { return errors.New("unexpected AppendRow") }

func (b *captureBatch) Column(i int) driver.BatchColumn {
	if b.cols == nil {
		b.cols = map[int]*captureColumn{}
	}
	c := &captureColumn{}
	b.cols[i] = c
	return c
}

// captured maps column names to the slice appended for them.
func captured(t *testing.T, rs sink.RowSet) map[string]any {
	t.Helper()
	var b captureBatch
	if err := rs.AppendTo(&b); err != nil {
		t.Fatalf("AppendTo: %v", err)
	}
	out := map[string]any{}
	for i, name := range rs.Columns() {
		out[name] = b.cols[i].vals
	}
	return out
}

func checkColumns(t *testing.T, got, want map[string]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d columns, want %d", len(got), len(want))
	}
	for name, w := range want {
		if g := got[name]; !reflect.DeepEqual(g, w) {
			t.Errorf("column %s = %#v, want %#v", name, g, w)
		}
	}
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func TestPresenceRows(t *testing.T) {
	conn := golden[events.PresenceEvent](t, "presence_connected.json")
	disc := golden[events.PresenceEvent](t, "presence_disconnected.json")
	rows := sink.NewPresenceRows()
	for _, e := range []events.PresenceEvent{conn, disc} {
		if err := rows.Add(e); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	if rows.Len() != 2 || rows.Table() != "presence_events" {
		t.Fatalf("Len, Table = %d, %q", rows.Len(), rows.Table())
	}
	checkColumns(t, captured(t, rows), map[string]any{
		"id":              []string{conn.ID, disc.ID},
		"device_id":       []string{conn.DeviceID, disc.DeviceID},
		"kind":            []string{"connected", "disconnected"},
		"reason":          []string{"", string(disc.Reason)},
		"raw_reason":      []string{"", disc.RawReason},
		"node":            []string{conn.Node, disc.Node},
		"broker_ts":       []time.Time{ms(conn.BrokerTSMS), ms(disc.BrokerTSMS)},
		"broker_ts_ms":    []uint64{uint64(conn.BrokerTSMS), uint64(disc.BrokerTSMS)},
		"connected_at_ms": []uint64{uint64(conn.ConnectedAtMS), uint64(disc.ConnectedAtMS)},
		"conn_version":    []int64{conn.ConnVersion, disc.ConnVersion},
		"ip":              []string{conn.IP, disc.IP},
		"username":        []string{conn.Username, disc.Username},
		"protocol":        []string{conn.Protocol, disc.Protocol},
		"proto_ver":       []uint8{uint8(conn.ProtoVer), uint8(disc.ProtoVer)},
		"keepalive_s":     []uint32{uint32(conn.KeepaliveS), uint32(disc.KeepaliveS)},
		"source":          []string{conn.Source, disc.Source},
		"received_at_ms":  []uint64{uint64(conn.ReceivedAtMS), uint64(disc.ReceivedAtMS)},
		"date":            []time.Time{ms(conn.BrokerTSMS), ms(disc.BrokerTSMS)},
	})
	rows.Reset()
	if rows.Len() != 0 {
		t.Fatalf("Len after Reset = %d", rows.Len())
	}
	if err := rows.Add(disc); err != nil {
		t.Fatal(err)
	}
	if got := captured(t, rows)["id"]; !reflect.DeepEqual(got, []string{disc.ID}) {
		t.Fatalf("id after Reset+Add = %v", got)
	}
}

func TestAlertRows(t *testing.T) {
	firing := golden[events.AlertEvent](t, "alert_firing.json")
	silenced := golden[events.AlertEvent](t, "alert_firing_silenced.json")
	resolved := golden[events.AlertEvent](t, "alert_resolved.json")
	inhibited := golden[events.AlertEvent](t, "alert_flapping_inhibited.json")
	rows := sink.NewAlertRows()
	for _, a := range []events.AlertEvent{firing, silenced, resolved, inhibited} {
		if err := rows.Add(a); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	got := captured(t, rows)
	if want := []string{firing.ID, silenced.ID, resolved.ID, inhibited.ID}; !reflect.DeepEqual(got["id"], want) {
		t.Errorf("id = %v, want %v", got["id"], want)
	}
	if want := []uint8{0, 1, 0, 0}; !reflect.DeepEqual(got["silenced"], want) {
		t.Errorf("silenced = %v, want %v", got["silenced"], want)
	}
	optional := map[string]any{
		"silence_ids":    [][]string{{}, {"sil-maint-sh01"}, {}, {}},
		"inhibited":      []uint8{0, 0, 0, 1},
		"inhibited_by":   []string{"", "", "", "a8a2c97b9163d1bfd85dd2dde158d838"},
		"new_total":      []uint32{0, 115, 0, 0},
		"resolved_total": []uint32{0, 3, 0, 0},
		"firing_total":   []uint32{0, 2, 0, 0},
		"known_total":    []uint32{0, 150, 0, 0},
		"flap_count":     []uint32{0, 0, 0, 7},
		"tier":           []uint16{0, 0, 0, 1},
	}
	for name, want := range optional {
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("%s = %#v, want %#v", name, got[name], want)
		}
	}
	if want := [][]string{{"device_id", "site"}, {"site"}}; !reflect.DeepEqual(got["group_label_keys"].([][]string)[:2], want) {
		t.Errorf("group_label_keys = %v, want %v first", got["group_label_keys"], want)
	}
	if want := [][]string{{"dev-42", "sh-01"}, {"sh-01"}}; !reflect.DeepEqual(got["group_label_values"].([][]string)[:2], want) {
		t.Errorf("group_label_values = %v, want %v first", got["group_label_values"], want)
	}
	if want := []string{"dev-42", "传感器 7.b"}; !reflect.DeepEqual(got["device_ids"].([][]string)[1][:2], want) {
		t.Errorf("device_ids[1] = %v, want %v first", got["device_ids"].([][]string)[1], want)
	}
	if want := []uint64{0, 0, uint64(resolved.EndsAtMS), 0}; !reflect.DeepEqual(got["ends_at_ms"], want) {
		t.Errorf("ends_at_ms = %v, want %v", got["ends_at_ms"], want)
	}
	if want := []time.Time{ms(firing.StartsAtMS), ms(silenced.StartsAtMS), ms(resolved.StartsAtMS), ms(inhibited.StartsAtMS)}; !reflect.DeepEqual(got["date"], want) {
		t.Errorf("date = %v, want %v", got["date"], want)
	}
}

func TestDeliveryRows(t *testing.T) {
	ok := golden[events.DeliveryEvent](t, "delivery.json")
	perm := golden[events.DeliveryEvent](t, "delivery_permanent.json")
	rows := sink.NewDeliveryRows()
	for _, d := range []events.DeliveryEvent{ok, perm} {
		if err := rows.Add(d); err != nil {
			t.Fatalf("Add: %v", err)
		}
	}
	checkColumns(t, captured(t, rows), map[string]any{
		"id":             []string{ok.ID, perm.ID},
		"alert_id":       []string{ok.AlertID, perm.AlertID},
		"fingerprint":    []string{ok.Fingerprint, perm.Fingerprint},
		"alert_status":   []string{string(ok.AlertStatus), string(perm.AlertStatus)},
		"receiver":       []string{ok.Receiver, perm.Receiver},
		"channel":        []string{ok.Channel, perm.Channel},
		"attempt":        []uint32{uint32(ok.Attempt), uint32(perm.Attempt)},
		"outcome":        []string{string(ok.Outcome), string(perm.Outcome)},
		"http_status":    []uint16{uint16(ok.HTTPStatus), uint16(perm.HTTPStatus)},
		"remote_code":    []string{ok.RemoteCode, perm.RemoteCode},
		"remote_message": []string{ok.RemoteMessage, perm.RemoteMessage},
		"hint":           []string{ok.Hint, perm.Hint},
		"bytes":          []uint32{uint32(ok.Bytes), uint32(perm.Bytes)},
		"latency_ms":     []uint64{uint64(ok.LatencyMS), uint64(perm.LatencyMS)},
		"at_ms":          []uint64{uint64(ok.AtMS), uint64(perm.AtMS)},
		"date":           []time.Time{ms(ok.AtMS), ms(perm.AtMS)},
	})
}

func TestRowsSaturateNarrowColumns(t *testing.T) {
	e := golden[events.PresenceEvent](t, "presence_connected.json")
	e.ProtoVer, e.KeepaliveS, e.ReceivedAtMS, e.ConnectedAtMS = 300, -1, -5, 0
	rows := sink.NewPresenceRows()
	if err := rows.Add(e); err != nil {
		t.Fatal(err)
	}
	got := captured(t, rows)
	checks := map[string]any{
		"proto_ver":      []uint8{255},
		"keepalive_s":    []uint32{0},
		"received_at_ms": []uint64{0},
	}
	for name, want := range checks {
		if !reflect.DeepEqual(got[name], want) {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

func TestRowsRejectTimesClickHouseCannotStore(t *testing.T) {
	year2106 := time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	last := year2106 - 1
	p := golden[events.PresenceEvent](t, "presence_connected.json")
	a := golden[events.AlertEvent](t, "alert_firing.json")
	d := golden[events.DeliveryEvent](t, "delivery.json")
	tests := []struct {
		name    string
		add     func() error
		wantErr string
	}{
		{"presence 2106", func() error { p.BrokerTSMS = year2106; return sink.NewPresenceRows().Add(p) },
			"broker_ts_ms " + strconv.FormatInt(year2106, 10) + ": time outside the range ClickHouse can store (1970-01-01 to 2105-12-31)"},
		{"presence last ms of 2105", func() error { p.BrokerTSMS = last; return sink.NewPresenceRows().Add(p) }, ""},
		{"alert 2106", func() error { a.StartsAtMS = year2106; return sink.NewAlertRows().Add(a) },
			"starts_at_ms " + strconv.FormatInt(year2106, 10) + ": time outside the range ClickHouse can store (1970-01-01 to 2105-12-31)"},
		{"delivery negative", func() error { d.AtMS = -1; return sink.NewDeliveryRows().Add(d) },
			"at_ms -1: time outside the range ClickHouse can store (1970-01-01 to 2105-12-31)"},
	}
	for _, tt := range tests {
		err := tt.add()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: Add = %v, want nil", tt.name, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr || !errors.Is(err, sink.ErrOutOfRange)):
			t.Errorf("%s: Add = %v, want %q (ErrOutOfRange)", tt.name, err, tt.wantErr)
		}
	}
	rows := sink.NewPresenceRows()
	p.BrokerTSMS = year2106
	_ = rows.Add(p)
	if rows.Len() != 0 {
		t.Errorf("a rejected event was added: Len = %d", rows.Len())
	}
}

func TestInsertQuery(t *testing.T) {
	got := sink.InsertQuery("fw", sink.NewDeliveryRows())
	want := "INSERT INTO fw.deliveries (id, alert_id, fingerprint, alert_status, receiver, channel, attempt, outcome, http_status, remote_code, remote_message, hint, bytes, latency_ms, at_ms, date)"
	if got != want {
		t.Fatalf("InsertQuery =\n%s\nwant\n%s", got, want)
	}
}

// migrated returns a connection and a fresh, migrated database.
func migrated(t testing.TB) (driver.Conn, string) {
	t.Helper()
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn)
	if _, err := schema.Migrate(t.Context(), conn, db, schema.Options{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return conn, db
}

func TestColumnsMatchTheSchema(t *testing.T) {
	conn, db := migrated(t)
	for _, rs := range []sink.RowSet{sink.NewPresenceRows(), sink.NewAlertRows(), sink.NewDeliveryRows()} {
		rows, err := conn.Query(t.Context(), "SELECT name FROM system.columns WHERE database = ? AND table = ?", db, rs.Table())
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		rows.Close()
		if !slices.Equal(names, rs.Columns()) {
			t.Errorf("%s: table columns %v, sink columns %v", rs.Table(), names, rs.Columns())
		}
	}
}

func TestWriterRoundTrip(t *testing.T) {
	conn, db := migrated(t)
	w := sink.NewWriter(conn, db)

	p := golden[events.PresenceEvent](t, "presence_disconnected.json")
	prows := sink.NewPresenceRows()
	_ = prows.Add(p)
	a := golden[events.AlertEvent](t, "alert_resolved.json")
	arows := sink.NewAlertRows()
	_ = arows.Add(a)
	d := golden[events.DeliveryEvent](t, "delivery_permanent.json")
	drows := sink.NewDeliveryRows()
	_ = drows.Add(d)
	for _, rs := range []sink.RowSet{prows, arows, drows, sink.NewPresenceRows()} {
		if err := w.Insert(t.Context(), rs); err != nil {
			t.Fatalf("Insert %s: %v", rs.Table(), err)
		}
	}

	var gp struct {
		ID, Device, Kind, Reason, Raw, Node string
		TS                                  time.Time
		TSMS, ConnAt                        uint64
		Keepalive                           uint32
		Date                                time.Time
	}
	if err := conn.QueryRow(t.Context(), "SELECT id, device_id, kind, reason, raw_reason, node, broker_ts, broker_ts_ms, connected_at_ms, keepalive_s, date FROM "+db+".presence_events").
		Scan(&gp.ID, &gp.Device, &gp.Kind, &gp.Reason, &gp.Raw, &gp.Node, &gp.TS, &gp.TSMS, &gp.ConnAt, &gp.Keepalive, &gp.Date); err != nil {
		t.Fatal(err)
	}
	wantTS := time.UnixMilli(p.BrokerTSMS).UTC().Truncate(time.Second)
	y, m, dd := wantTS.Date()
	if gp.ID != p.ID || gp.Device != p.DeviceID || gp.Kind != string(p.Kind) || gp.Reason != string(p.Reason) ||
		gp.Raw != p.RawReason || gp.Node != p.Node || !gp.TS.Equal(wantTS) || gp.TSMS != uint64(p.BrokerTSMS) ||
		gp.ConnAt != uint64(p.ConnectedAtMS) || gp.Keepalive != uint32(p.KeepaliveS) ||
		!gp.Date.Equal(time.Date(y, m, dd, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("presence row = %+v, event %+v", gp, p)
	}

	var keys, vals, devs []string
	var status string
	var ends uint64
	if err := conn.QueryRow(t.Context(), "SELECT status, group_label_keys, group_label_values, device_ids, ends_at_ms FROM "+db+".alerts WHERE id = ?", a.ID).
		Scan(&status, &keys, &vals, &devs, &ends); err != nil {
		t.Fatal(err)
	}
	if status != "resolved" || ends != uint64(a.EndsAtMS) || len(keys) != len(a.GroupLabels) || len(devs) != len(a.Devices) {
		t.Errorf("alert row status=%s ends=%d keys=%v vals=%v devs=%v, event %+v", status, ends, keys, vals, devs, a)
	}
	for i, k := range keys {
		if a.GroupLabels[k] != vals[i] {
			t.Errorf("group label %s = %q, want %q", k, vals[i], a.GroupLabels[k])
		}
	}

	var outcome, code, msg string
	var httpStatus uint16
	if err := conn.QueryRow(t.Context(), "SELECT outcome, remote_code, remote_message, http_status FROM "+db+".deliveries WHERE id = ?", d.ID).
		Scan(&outcome, &code, &msg, &httpStatus); err != nil {
		t.Fatal(err)
	}
	if outcome != string(d.Outcome) || code != d.RemoteCode || msg != d.RemoteMessage || httpStatus != uint16(d.HTTPStatus) {
		t.Errorf("delivery row = %s %s %s %d, event %+v", outcome, code, msg, httpStatus, d)
	}
}

func TestWriterReportsTheTable(t *testing.T) {
	conn := chtest.Open(t)
	db := chtest.FreshDatabase(t, conn) // never created
	rows := sink.NewPresenceRows()
	_ = rows.Add(golden[events.PresenceEvent](t, "presence_connected.json"))
	err := sink.NewWriter(conn, db).Insert(t.Context(), rows)
	if err == nil {
		t.Fatal("Insert into a missing database succeeded")
	}
	want := "prepare insert into " + db + ".presence_events: "
	if len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("Insert error = %q, want prefix %q", err, want)
	}
}

func presenceEvents(b *testing.B, n int) []events.PresenceEvent {
	base := golden[events.PresenceEvent](b, "presence_disconnected.json")
	evs := make([]events.PresenceEvent, n)
	for i := range evs {
		e := base
		e.DeviceID = "dev-" + strconv.Itoa(i)
		e.BrokerTSMS += int64(i)
		e.ID = events.PresenceID(e)
		evs[i] = e
	}
	return evs
}

// BenchmarkPresenceRowsAdd measures converting events to column values.
func BenchmarkPresenceRowsAdd(b *testing.B) {
	evs := presenceEvents(b, 5000)
	rows := sink.NewPresenceRows()
	b.ReportAllocs()
	for b.Loop() {
		rows.Reset()
		for _, e := range evs {
			_ = rows.Add(e)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/row")
}

// BenchmarkPresenceAppendBatch measures conversion plus appending a batch of
// 5000 rows to a prepared native batch (encoding included, network send
// excluded).
func BenchmarkPresenceAppendBatch(b *testing.B) {
	conn, db := migrated(b)
	evs := presenceEvents(b, 5000)
	rows := sink.NewPresenceRows()
	b.ReportAllocs()
	for b.Loop() {
		rows.Reset()
		for _, e := range evs {
			_ = rows.Add(e)
		}
		batch, err := conn.PrepareBatch(b.Context(), sink.InsertQuery(db, rows))
		if err != nil {
			b.Fatal(err)
		}
		if err := rows.AppendTo(batch); err != nil {
			b.Fatal(err)
		}
		_ = batch.Abort()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/row")
}

// BenchmarkPresenceInsert measures inserting batches of 5000 rows into
// ClickHouse end to end.
func BenchmarkPresenceInsert(b *testing.B) {
	conn, db := migrated(b)
	evs := presenceEvents(b, 5000)
	rows := sink.NewPresenceRows()
	w := sink.NewWriter(conn, db)
	b.ReportAllocs()
	for b.Loop() {
		rows.Reset()
		for _, e := range evs {
			_ = rows.Add(e)
		}
		if err := w.Insert(b.Context(), rows); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "rows/s")
}
