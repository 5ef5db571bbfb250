package ingest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest"
	"github.com/fleetwatch/fleetwatch/services/ingest/reconcile"
)

// TestReconcile: the service repairs a connect it never saw (the API lists
// the device connected) and a device the broker forgot (stored connected,
// unknown to the API), through the documented REST API shape.
func TestReconcile(t *testing.T) {
	e := newEnv(t)
	now := &clock{}
	now.Set(1718000500000)
	e.deps = func(d *ingest.Deps) { d.Now = now.Now }
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k, s, ok := r.BasicAuth(); !ok || k != "fleetwatch" || s != "api-s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/api/v5/clients/") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"code":"CLIENTID_NOT_FOUND","message":"Client ID not found"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"data": []map[string]any{{"clientid": "rc-missed", "node": "emqx@n2", "connected": true,
				"connected_at": "2024-06-10T06:13:20.123+00:00", "ip_address": "10.0.0.9", "proto_ver": 4, "keepalive": 30,
				"username": "undefined"}},
			"meta": map[string]any{"page": 1, "limit": 1000, "count": 1, "hasnext": false},
		})
	}))
	defer api.Close()
	cfg := e.config()
	cfg.Reconcile.Enabled = true
	cfg.Reconcile.URL = api.URL
	cfg.Reconcile.APIKey = "fleetwatch"
	cfg.Reconcile.APISecretEnv = "FLEETWATCH_TEST_API_SECRET"
	cfg.Reconcile.Interval = time.Hour
	t.Setenv("FLEETWATCH_TEST_API_SECRET", "api-s3cret")
	svc, _ := e.start(cfg)

	forgotten := e.subscribe(events.StreamPresence, events.PresenceSubject("rc-forgotten", events.DefaultPartitions))
	if err := e.broker.Publish("$SYS/brokers/emqx@n1/clients/rc-forgotten/connected",
		[]byte(`{"clientid":"rc-forgotten","protocol":"mqtt","connected_at":1718000000000}`), 1); err != nil {
		t.Fatal(err)
	}
	if ev := forgotten.nextEvent(); ev.Kind != events.KindConnected {
		t.Fatalf("got %+v", ev)
	}
	// The stream may have the event before ingest has JetStream's ack
	// (and with it the device tracked as connected): wait for the ack.
	e.eventually("the connect acknowledged", func() error {
		if n := svc.Stats().Published; n != 1 {
			return fmt.Errorf("published %d", n)
		}
		return nil
	})
	now.Set(1718000600000)
	svc.ReconcileNow()
	e.eventually("a reconcile pass", func() error {
		if rep := svc.LastReconcile(); rep != (reconcile.Report{Listed: 1, Connected: 1, Absent: 1}) {
			return fmt.Errorf("report %+v", rep)
		}
		return nil
	})
	missed := e.subscribe(events.StreamPresence, events.PresenceSubject("rc-missed", events.DefaultPartitions)).nextEvent()
	want, _ := events.NewPresenceEvent(events.PresenceEvent{DeviceID: "rc-missed", Kind: events.KindConnected, Node: "emqx@n2",
		BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, IP: "10.0.0.9", ProtoVer: 4, KeepaliveS: 30,
		Source: reconcile.Source, ReceivedAtMS: 1718000600000})
	if missed != want {
		t.Fatalf("corrective connect %+v\nwant %+v", missed, want)
	}
	gone := forgotten.nextEvent()
	want, _ = events.NewPresenceEvent(events.PresenceEvent{DeviceID: "rc-forgotten", Kind: events.KindDisconnected,
		Reason: events.ReasonOther, RawReason: reconcile.RawReasonAbsent, Node: "emqx@n1", BrokerTSMS: 1718000600000,
		ConnectedAtMS: 1718000000000, Protocol: "mqtt", Source: reconcile.Source, ReceivedAtMS: 1718000600000})
	if gone != want {
		t.Fatalf("corrective disconnect %+v\nwant %+v", gone, want)
	}
	if got := counter(t, e.metrics, "fleetwatch_ingest_reconciled", ""); got != 2 {
		t.Errorf("fleetwatch_ingest_reconciled = %d, want 2", got)
	}
}
