package reconcile_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/reconcile"
)

var now = time.UnixMilli(1718000999000)

const (
	c0 = 1718000000123 // connected_at of the current connection
	d0 = 1718000300411 // its disconnected_at
)

func stored(t *testing.T, e events.PresenceEvent) events.PresenceEvent {
	t.Helper()
	if e.Source == "" {
		e.Source = "emqx_sys_v5"
	}
	e.ReceivedAtMS = 1718000000500
	e, err := events.NewPresenceEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDecide(t *testing.T) {
	connected := reconcile.Client{ClientID: "d", Node: "emqx@n1", Connected: true, ConnectedAtMS: c0, Username: "u", IP: "10.0.0.1", ProtoVer: 5, KeepaliveS: 60}
	session := reconcile.Client{ClientID: "d", Node: "emqx@n1", ConnectedAtMS: c0, DisconnectedAtMS: d0}
	conn := events.PresenceEvent{DeviceID: "d", Kind: events.KindConnected, Node: "emqx@n1", BrokerTSMS: c0, ConnectedAtMS: c0}
	disc := events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonKeepaliveTimeout,
		RawReason: "keepalive_timeout", Node: "emqx@n1", BrokerTSMS: d0, ConnectedAtMS: c0}
	older := conn
	older.ConnectedAtMS, older.BrokerTSMS = c0-1000, c0-1000
	olderDisc := disc
	olderDisc.ConnectedAtMS, olderDisc.BrokerTSMS = c0-1000, c0-500
	newer := conn
	newer.ConnectedAtMS, newer.BrokerTSMS = c0+1000, c0+1000
	for _, tc := range []struct {
		name    string
		client  reconcile.Client
		last    *events.PresenceEvent
		want    *events.PresenceEvent
		wantSrc string
	}{
		{name: "connected, nothing stored", client: connected, want: &events.PresenceEvent{Kind: events.KindConnected, BrokerTSMS: c0, ConnectedAtMS: c0, KeepaliveS: 60}},
		{name: "connected, same connection stored", client: connected, last: &conn},
		{name: "connected, stored an older connection", client: connected, last: &older,
			want: &events.PresenceEvent{Kind: events.KindConnected, BrokerTSMS: c0, ConnectedAtMS: c0, KeepaliveS: 60}},
		{name: "connected, stored the end of an older connection", client: connected, last: &olderDisc,
			want: &events.PresenceEvent{Kind: events.KindConnected, BrokerTSMS: c0, ConnectedAtMS: c0, KeepaliveS: 60}},
		{name: "connected, stored its disconnect (API older than events)", client: connected, last: &disc},
		{name: "connected, stored a newer connection", client: connected, last: &newer},
		{name: "session, stored connected: missed disconnect", client: session, last: &conn,
			want: &events.PresenceEvent{Kind: events.KindDisconnected, Reason: events.ReasonOther, BrokerTSMS: d0, ConnectedAtMS: c0}},
		{name: "session, stored its disconnect", client: session, last: &disc},
		{name: "session, stored a newer connection", client: session, last: &newer},
		{name: "session, nothing stored", client: session},
		{name: "session without disconnected_at", client: reconcile.Client{ClientID: "d", Node: "emqx@n1", ConnectedAtMS: c0}, last: &conn},
		{name: "no node", client: reconcile.Client{ClientID: "d", Connected: true, ConnectedAtMS: c0}},
		{name: "last-will device is not EMQX's to correct", client: connected,
			last: &events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonOther, Node: "m", BrokerTSMS: c0 - 5, Source: "last_will"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var last events.PresenceEvent
			if tc.last != nil {
				last = stored(t, *tc.last)
			}
			got, emit, err := reconcile.Decide(tc.client, last, tc.last != nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if emit {
					t.Fatalf("emitted %+v, want nothing", got)
				}
				return
			}
			w := *tc.want
			w.DeviceID, w.Node, w.Source, w.ReceivedAtMS = "d", "emqx@n1", reconcile.Source, now.UnixMilli()
			w.Username, w.IP, w.ProtoVer = tc.client.Username, tc.client.IP, tc.client.ProtoVer
			w, err = events.NewPresenceEvent(w)
			if err != nil {
				t.Fatal(err)
			}
			if !emit || got != w {
				t.Fatalf("got %+v (emit %v)\nwant %+v", got, emit, w)
			}
		})
	}
}

// TestCorrectiveIDsMatchTheMissedEvents: a corrective event has the id of
// the $SYS event it stands for, so if that one was stored after all,
// JetStream keeps one.
func TestCorrectiveIDsMatchTheMissedEvents(t *testing.T) {
	sysConn := stored(t, events.PresenceEvent{DeviceID: "d", Kind: events.KindConnected, Node: "emqx@n1", BrokerTSMS: c0, ConnectedAtMS: c0})
	got, _, _ := reconcile.Decide(reconcile.Client{ClientID: "d", Node: "emqx@n1", Connected: true, ConnectedAtMS: c0}, events.PresenceEvent{}, false, now)
	if got.ID != sysConn.ID {
		t.Errorf("corrective connect id %s, $SYS connect id %s", got.ID, sysConn.ID)
	}
	sysDisc := stored(t, events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonClosed, RawReason: "tcp_closed",
		Node: "emqx@n1", BrokerTSMS: d0, ConnectedAtMS: c0})
	got, _, _ = reconcile.Decide(reconcile.Client{ClientID: "d", Node: "emqx@n1", ConnectedAtMS: c0, DisconnectedAtMS: d0}, sysConn, true, now)
	if got.ID != sysDisc.ID {
		t.Errorf("corrective disconnect id %s, $SYS disconnect id %s", got.ID, sysDisc.ID)
	}
}

func TestDecideAbsent(t *testing.T) {
	listed := now.Add(-time.Second)
	conn := stored(t, events.PresenceEvent{DeviceID: "d", Kind: events.KindConnected, Node: "emqx@n1", BrokerTSMS: c0, ConnectedAtMS: c0, IP: "10.0.0.1"})
	got, emit, err := reconcile.DecideAbsent(conn, listed, now)
	want, _ := events.NewPresenceEvent(events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonOther,
		RawReason: reconcile.RawReasonAbsent, Node: "emqx@n1", BrokerTSMS: now.UnixMilli(), ConnectedAtMS: c0, IP: "10.0.0.1",
		Source: reconcile.Source, ReceivedAtMS: now.UnixMilli()})
	if err != nil || !emit || got != want {
		t.Fatalf("got %+v, %v, %v\nwant %+v", got, emit, err, want)
	}
	if _, emit, _ := reconcile.DecideAbsent(conn, time.UnixMilli(conn.ReceivedAtMS), now); emit {
		t.Error("an event stored after the listing began was corrected")
	}
	disc := stored(t, events.PresenceEvent{DeviceID: "d", Kind: events.KindDisconnected, Reason: events.ReasonOther, Node: "emqx@n1", BrokerTSMS: d0})
	if _, emit, _ := reconcile.DecideAbsent(disc, listed, now); emit {
		t.Error("a disconnected device was corrected")
	}
}

// emqxAPI serves the documented shape of GET /api/v5/clients (paged) and
// GET /api/v5/clients/{id}, with basic auth.
type emqxAPI struct {
	mu      sync.Mutex
	clients []map[string]any
	pages   []string
}

func (a *emqxAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if k, s, ok := r.BasicAuth(); !ok || k != "key" || s != "secret" {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"code":"BAD_API_KEY_OR_SECRET","message":"Check api_key/api_secret"}`))
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := strings.CutPrefix(r.URL.EscapedPath(), "/api/v5/clients/"); ok {
		for _, c := range a.clients {
			if esc := strings.ReplaceAll(c["clientid"].(string), "/", "%2F"); esc == id {
				_ = json.NewEncoder(w).Encode(c)
				return
			}
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"code":"CLIENTID_NOT_FOUND","message":"Client ID not found"}`))
		return
	}
	if r.URL.Path != "/api/v5/clients" {
		http.NotFound(w, r)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	a.pages = append(a.pages, r.URL.RawQuery)
	from, to := min((page-1)*limit, len(a.clients)), min(page*limit, len(a.clients))
	_ = json.NewEncoder(w).Encode(map[string]any{
		"data": a.clients[from:to],
		"meta": map[string]any{"page": page, "limit": limit, "count": len(a.clients), "hasnext": to < len(a.clients)},
	})
}

func row(id string, connected bool, connectedAt, disconnectedAt string) map[string]any {
	r := map[string]any{"clientid": id, "node": "emqx@n1", "connected": connected, "connected_at": connectedAt,
		"username": "undefined", "ip_address": "10.0.0.1", "port": 5000, "proto_name": "MQTT", "proto_ver": 5,
		"keepalive": 60, "clean_start": true, "expiry_interval": 0, "created_at": connectedAt, "is_bridge": false,
		"recv_msg": 0, "mqueue_len": 0}
	if disconnectedAt != "" {
		r["disconnected_at"] = disconnectedAt
	}
	return r
}

func TestAPI(t *testing.T) {
	srv := httptest.NewServer(&emqxAPI{clients: []map[string]any{
		row("a", true, "2024-06-10T06:13:20.123+00:00", ""),
		row("b/c", false, "2024-06-10T14:13:20.123+08:00", "2024-06-10T06:18:20.411Z"),
		row("c", true, "2024-06-10T06:13:20.123+00:00", ""),
	}})
	defer srv.Close()
	api, err := reconcile.NewAPI(srv.URL+"/", "key", "secret", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	rows, hasNext, err := api.Page(t.Context(), 1, 2)
	want := []reconcile.Client{
		{ClientID: "a", Node: "emqx@n1", Connected: true, ConnectedAtMS: c0, IP: "10.0.0.1", ProtoVer: 5, KeepaliveS: 60},
		{ClientID: "b/c", Node: "emqx@n1", ConnectedAtMS: c0, DisconnectedAtMS: d0, IP: "10.0.0.1", ProtoVer: 5, KeepaliveS: 60},
	}
	if err != nil || !hasNext || !slices.Equal(rows, want) {
		t.Fatalf("Page 1 = %+v, %v, %v\nwant %+v", rows, hasNext, err, want)
	}
	if rows, hasNext, err := api.Page(t.Context(), 2, 2); err != nil || hasNext || len(rows) != 1 {
		t.Fatalf("Page 2 = %+v, %v, %v", rows, hasNext, err)
	}
	if c, err := api.Get(t.Context(), "b/c"); err != nil || c != want[1] {
		t.Fatalf("Get(b/c) = %+v, %v", c, err)
	}
	if _, err := api.Get(t.Context(), "zz"); !errors.Is(err, reconcile.ErrNotFound) {
		t.Fatalf("Get(zz) = %v, want ErrNotFound", err)
	}
	bad, _ := reconcile.NewAPI(srv.URL, "key", "wrong-secret-value", srv.Client())
	_, _, err = bad.Page(t.Context(), 1, 2)
	if err == nil || err.Error() != "emqx api: /api/v5/clients: 401 unauthorized: check ingest.reconcile.api_key and the secret" {
		t.Fatalf("bad secret: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatal("the secret is in the error")
	}
	if _, err := reconcile.NewAPI("http://u:p@h:1", "k", "s", nil); err == nil || strings.Contains(err.Error(), "u:p") {
		t.Fatalf("credentials in url: %v", err)
	}
}

// memStore is a Store over a map.
type memStore struct {
	mu        sync.Mutex
	last      map[string]events.PresenceEvent
	published []events.PresenceEvent
}

func (m *memStore) Last(_ context.Context, id string) (events.PresenceEvent, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.last[id]
	return e, ok, nil
}

func (m *memStore) Publish(_ context.Context, ev events.PresenceEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.published = append(m.published, ev)
	m.last[ev.DeviceID] = ev
	return nil
}

// TestRun: a pass over three pages repairs a missed connect, a missed
// disconnect and a device the broker forgot, and leaves the rest alone.
func TestRun(t *testing.T) {
	at := "2024-06-10T06:13:20.123Z"
	api := &emqxAPI{clients: []map[string]any{
		row("ok", true, at, ""),
		row("missed-connect", true, at, ""),
		row("missed-disconnect", false, at, "2024-06-10T06:18:20.411Z"),
		row("gone-ok", false, at, "2024-06-10T06:18:20.411Z"),
		row("listed-late", true, at, ""),
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	client, err := reconcile.NewAPI(srv.URL, "key", "secret", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	conn := func(id string) events.PresenceEvent {
		return stored(t, events.PresenceEvent{DeviceID: id, Kind: events.KindConnected, Node: "emqx@n1", BrokerTSMS: c0, ConnectedAtMS: c0})
	}
	gone := stored(t, events.PresenceEvent{DeviceID: "gone-ok", Kind: events.KindDisconnected, Reason: events.ReasonNormal,
		RawReason: "normal", Node: "emqx@n1", BrokerTSMS: d0, ConnectedAtMS: c0})
	store := &memStore{last: map[string]events.PresenceEvent{
		"ok": conn("ok"), "missed-disconnect": conn("missed-disconnect"), "gone-ok": gone,
		"crashed": conn("crashed"), "listed-late": conn("listed-late"),
	}}
	r := &reconcile.Reconciler{Lister: client, Store: store, PageLimit: 2, Now: func() time.Time { return now },
		Online: func() []string { return []string{"ok", "missed-disconnect", "crashed", "listed-late"} }}
	rep, err := r.Run(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := (reconcile.Report{Listed: 5, Connected: 1, Disconnected: 1, Absent: 1}); rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	var got []string
	for _, e := range store.published {
		got = append(got, e.DeviceID+" "+string(e.Kind)+" "+e.RawReason)
	}
	if want := []string{"missed-connect connected ", "missed-disconnect disconnected ", "crashed disconnected absent_from_broker"}; !slices.Equal(got, want) {
		t.Fatalf("published %q\nwant %q", got, want)
	}
	if want := []string{"limit=2&page=1", "limit=2&page=2", "limit=2&page=3"}; !slices.Equal(api.pages, want) {
		t.Errorf("pages %q, want %q", api.pages, want)
	}
	// A second pass finds nothing to do.
	if rep, err := r.Run(t.Context()); err != nil || rep != (reconcile.Report{Listed: 5}) {
		t.Fatalf("second pass %+v, %v", rep, err)
	}
}
