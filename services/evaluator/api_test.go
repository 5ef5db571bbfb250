package evaluator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/api"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

const apiToken = "0123456789abcdef-test-token"

type client struct {
	t    *testing.T
	base string
}

// do sends a request and decodes the JSON answer into out (when not nil);
// it returns the status code and the error message of a 4xx/5xx.
func (c client) do(method, path, token, body string, out any) (int, string) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			c.t.Fatalf("%s %s: %d with content type %q: %s", method, path, resp.StatusCode, ct, b)
		}
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
			c.t.Fatalf("%s %s: %d without a JSON error: %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, e.Error
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, ""
}

func apiConfig(t *testing.T) evaluator.Config {
	t.Setenv("FW_TEST_API_TOKEN", apiToken)
	cfg := testConfig("ops")
	cfg.API.Listen = "127.0.0.1:0"
	cfg.API.TokenEnv = "FW_TEST_API_TOKEN"
	cfg.API.MaxBodyBytes = 2048
	cfg.Labels = labels.Config{ClientID: []labels.ClientIDRule{{Regex: `^(?P<site>plant[0-9]+)-`}}}
	cfg.Route = &route.Config{GroupBy: []string{"site"}}
	cfg.Silences.Windows = []silencestore.WindowConfig{{Name: "nightly", Matchers: []string{`site="plant1"`}, Start: "01:00", End: "02:00"}}
	return cfg
}

func TestAPI(t *testing.T) {
	h := newHarness(t)
	r := h.start(t, apiConfig(t))
	c := client{t: t, base: "http://" + r.svc.APIAddr()}

	h.waitProcessed(t, h.publish(t,
		connected(t, "plant1-a", "n1", t0), connected(t, "plant1-b", "n1", t0), connected(t, "plant2-c", "n1", t0),
		disconnected(t, "plant1-b", "n1", t0, t0+1_000, events.ReasonKeepaliveTimeout),
		connected(t, "odd/id é", "n1", t0)))

	var d api.Device
	if code, msg := c.do("GET", "/api/v1/devices/plant1-a", "", "", &d); code != 200 {
		t.Fatalf("get device: %d %s", code, msg)
	}
	if want := (api.Device{DeviceID: "plant1-a", Status: "online", Node: "n1", ConnectedAtMS: t0, SinceMS: t0,
		Labels: map[string]string{"site": "plant1", "device_id": "plant1-a", "node": "n1"}}); !reflect.DeepEqual(d, want) {
		t.Fatalf("device %+v", d)
	}
	if code, _ := c.do("GET", "/api/v1/devices/"+url.PathEscape("odd/id é"), "", "", &d); code != 200 || d.DeviceID != "odd/id é" {
		t.Fatalf("device with a slash: %d %+v", code, d)
	}
	if code, msg := c.do("GET", "/api/v1/devices/nope", "", "", nil); code != 404 || msg != `device "nope" is not known to this evaluator (never seen in PRESENCE)` {
		t.Fatalf("unknown device: %d %s", code, msg)
	}

	var list api.DeviceList
	c.do("GET", "/api/v1/devices?match="+url.QueryEscape(`site="plant1"`), "", "", &list)
	if list.Total != 2 || list.Counts["online"] != 1 || list.Counts["pending"] != 1 || list.Matched != 2 || len(list.Devices) != 2 || list.NextAfter != "" {
		t.Fatalf("plant1 devices %+v", list)
	}
	c.do("GET", "/api/v1/devices?state=online&limit=2", "", "", &list)
	if list.Total != 4 || list.Matched != 3 || len(list.Devices) != 2 || list.Devices[0].DeviceID != "odd/id é" ||
		list.Devices[1].DeviceID != "plant1-a" || list.NextAfter != "plant1-a" {
		t.Fatalf("page 1 %+v", list)
	}
	list = api.DeviceList{}
	c.do("GET", "/api/v1/devices?state=online&limit=2&after=plant1-a", "", "", &list)
	if len(list.Devices) != 1 || list.Devices[0].DeviceID != "plant2-c" || list.NextAfter != "" {
		t.Fatalf("page 2 %+v", list)
	}
	for q, want := range map[string]string{
		"state=gone": `state "gone": use online, pending, offline or unknown (several: state=offline,pending)`,
		"limit=0":    "limit \"0\": use 1 to 1000",
		"match=site": `match: [0] "site": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`,
		"sort=id":    `unknown query parameter "sort": use state, match, limit or after`,
	} {
		if code, msg := c.do("GET", "/api/v1/devices?"+q, "", "", nil); code != 400 || msg != want {
			t.Errorf("%s: %d %q, want %q", q, code, msg, want)
		}
	}

	// plant1-b fires.
	h.clock.set(t0 + 40_000)
	h.waitAlerts(t, 1)
	list = api.DeviceList{}
	c.do("GET", "/api/v1/alerts", "", "", &list)
	if list.Total != 1 || len(list.Devices) != 1 || list.Devices[0].DeviceID != "plant1-b" || !list.Devices[0].Alerting ||
		list.Devices[0].Status != "offline" || list.Devices[0].Reason != "keepalive_timeout" {
		t.Fatalf("alerts %+v", list)
	}
	var groups struct {
		Groups []api.Group `json:"groups"`
	}
	c.do("GET", "/api/v1/groups", "", "", &groups)
	if len(groups.Groups) != 1 || groups.Groups[0].Key != `root{site="plant1"}` || groups.Groups[0].Firing != 1 ||
		!reflect.DeepEqual(groups.Groups[0].Devices, []string{"plant1-b"}) || groups.Groups[0].Receivers[0] != "ops" {
		t.Fatalf("groups %+v", groups)
	}

	// Silences: token-protected writes.
	body := `{"matchers":["site=\"plant2\""],"ends_at":"2099-01-01T00:00:00Z","comment":"maintenance","created_by":"ops"}`
	if code, msg := c.do("POST", "/api/v1/silences", "", body, nil); code != 401 || msg != "missing bearer token: send the header Authorization: Bearer <token>" {
		t.Fatalf("no token: %d %s", code, msg)
	}
	if code, msg := c.do("POST", "/api/v1/silences", "wrong-token-0123456789", body, nil); code != 401 || msg != "invalid bearer token" {
		t.Fatalf("wrong token: %d %s", code, msg)
	}
	var sl api.Silence
	if code, msg := c.do("POST", "/api/v1/silences", apiToken, body, &sl); code != 201 || sl.Status != "active" || sl.Source != "api" || len(sl.ID) != 24 {
		t.Fatalf("create: %d %s %+v", code, msg, sl)
	}
	var sls struct {
		Silences []api.Silence `json:"silences"`
	}
	c.do("GET", "/api/v1/silences", "", "", &sls)
	if len(sls.Silences) != 2 || sls.Silences[0].ID != sl.ID || sls.Silences[1].Source != "config" ||
		!strings.HasPrefix(sls.Silences[1].ID, "window-nightly-") {
		t.Fatalf("silences %+v", sls)
	}
	putBody := `{"matchers":["site=\"plant3\""],"starts_at":"2098-01-01T00:00:00Z","ends_at":"2099-01-01T00:00:00Z"}`
	if code, msg := c.do("PUT", "/api/v1/silences/later", apiToken, putBody, &sl); code != 200 || sl.ID != "later" || sl.Status != "pending" {
		t.Fatalf("put: %d %s %+v", code, msg, sl)
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", "/api/v1/silences", `{"matchers":["site"],"ends_at":"2099-01-01T00:00:00Z"}`, 400,
			`invalid silence: matchers: [0] "site": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`},
		{"POST", "/api/v1/silences", `{"matcher":["a=b"]}`, 400, `invalid JSON body: json: unknown field "matcher"`},
		{"POST", "/api/v1/silences", `{"id":"later","matchers":["a=b"],"ends_at":"2099-01-01T00:00:00Z"}`, 409,
			`silence "later" exists already: PUT /api/v1/silences/later to replace it`},
		{"POST", "/api/v1/silences", `{"comment":"` + strings.Repeat("x", 3000) + `"}`, 413, "the body is over 2048 bytes (evaluator.api.max_body_bytes)"},
		{"PUT", "/api/v1/silences/x", `{"id":"y","matchers":["a=b"],"ends_at":"2099-01-01T00:00:00Z"}`, 400,
			`the body's id "y" differs from the path's "x": leave it out or make them equal`},
		{"DELETE", "/api/v1/silences/none", "", 404, `no silence "none"`},
		{"PATCH", "/api/v1/silences/later", "", 405, "method PATCH is not allowed on /api/v1/silences/later: use DELETE, GET, PUT"},
		{"GET", "/api/v2/x", "", 404, "no such endpoint: /api/v2/x (see docs/evaluator-api.md)"},
	} {
		if code, msg := c.do(tc.method, tc.path, apiToken, tc.body, nil); code != tc.code || msg != tc.msg {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, code, msg, tc.code, tc.msg)
		}
	}
	if code, _ := c.do("DELETE", "/api/v1/silences/later", apiToken, "", nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := c.do("GET", "/api/v1/silences/later", "", "", nil); code != 404 {
		t.Fatalf("get deleted: %d", code)
	}

	// The dynamic inventory relabels a device (watched back through KV).
	var inv api.Inventory
	if code, msg := c.do("PUT", "/api/v1/inventory/plant1-a", apiToken, `{"site":"plant9","owner":"ops-east"}`, &inv); code != 200 {
		t.Fatalf("put inventory: %d %s", code, msg)
	}
	waitFor(t, "relabel", func() bool {
		c.do("GET", "/api/v1/devices/plant1-a", "", "", &d)
		return d.Labels["site"] == "plant9" && d.Labels["owner"] == "ops-east"
	})
	if code, msg := c.do("PUT", "/api/v1/inventory/plant1-a", apiToken, `{"node":"x"}`, nil); code != 400 ||
		msg != `invalid inventory entry: label "node" is implicit (device_id, node and reason are set by the evaluator): pick another name` {
		t.Fatalf("bad inventory: %d %s", code, msg)
	}
	if code, _ := c.do("GET", "/api/v1/inventory/plant1-a", "", "", &inv); code != 200 || inv.Labels["owner"] != "ops-east" {
		t.Fatalf("get inventory: %d %+v", code, inv)
	}
	// An alerting device is relabelled once it recovered.
	c.do("PUT", "/api/v1/inventory/plant1-b", apiToken, `{"owner":"night-shift"}`, nil)
	h.clock.set(t0 + 45_000)
	h.waitTicks(t, 3)
	d = api.Device{}
	c.do("GET", "/api/v1/devices/plant1-b", "", "", &d)
	if d.Labels["owner"] != "" {
		t.Fatalf("alerting device relabelled: %+v", d)
	}
	h.publish(t, connected(t, "plant1-b", "n1", t0+44_000))
	waitFor(t, "relabel after recovery", func() bool {
		c.do("GET", "/api/v1/devices/plant1-b", "", "", &d)
		return d.Labels["owner"] == "night-shift" && d.Status == "online"
	})
	if code, _ := c.do("DELETE", "/api/v1/inventory/plant1-a", apiToken, "", nil); code != 204 {
		t.Fatalf("delete inventory: %d", code)
	}
	waitFor(t, "inventory delete", func() bool {
		d = api.Device{}
		c.do("GET", "/api/v1/devices/plant1-a", "", "", &d)
		return d.Labels["site"] == "plant1" && d.Labels["owner"] == ""
	})

	var ready map[string]string
	if code, _ := c.do("GET", "/readyz", "", "", &ready); code != 200 || ready["status"] != "ready" {
		t.Fatalf("readyz: %d %v", code, ready)
	}
	r.stop()
	if _, err := http.Get(c.base + "/healthz"); err == nil {
		t.Fatal("the API still answers after Run returned")
	}
}

func TestAPIWithoutTokenRefusesWrites(t *testing.T) {
	h := newHarness(t)
	cfg := apiConfig(t)
	cfg.API.TokenEnv = ""
	r := h.start(t, cfg)
	c := client{t: t, base: "http://" + r.svc.APIAddr()}
	if code, msg := c.do("DELETE", "/api/v1/silences/x", apiToken, "", nil); code != 403 ||
		msg != "state-changing calls are disabled: no API token is configured (set evaluator.api.token_file or token_env)" {
		t.Fatalf("%d %s", code, msg)
	}
	var sls struct {
		Silences []api.Silence `json:"silences"`
	}
	if code, _ := c.do("GET", "/api/v1/silences?status=active", "", "", &sls); code != 200 || len(sls.Silences) != 0 {
		t.Fatalf("reads stay open: %d %+v", code, sls)
	}
}

func TestNewRejectsMissingToken(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	cfg.API.TokenFile = t.TempDir() + "/missing"
	_, err := evaluator.New(cfg, evaluator.Deps{NATS: h.nc})
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "evaluator.api.token_file: open ") {
		t.Fatalf("New = %v", err)
	}
	short := t.TempDir() + "/short"
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.API.TokenFile = short
	if _, err := evaluator.New(cfg, evaluator.Deps{NATS: h.nc}); err == nil || strings.Contains(err.Error(), "abc") ||
		err.Error() != "evaluator.api: the token is shorter than 16 characters: use a long random token, e.g. from `openssl rand -hex 32`" {
		t.Fatalf("short token: %v", err)
	}
}

// TestReload swaps the routes of a running evaluator: a device alerting
// before stays announced, its recovery goes to the new receiver; a config
// that changes a fixed setting, or is invalid, is rejected whole.
func TestReload(t *testing.T) {
	h := newHarness(t)
	cfg := testConfig("ops")
	r := h.start(t, cfg)
	h.waitProcessed(t, h.publish(t, connected(t, "d1", "n1", t0), disconnected(t, "d1", "n1", t0, t0+1_000, events.ReasonKeepaliveTimeout)))
	h.clock.set(t0 + 40_000)
	h.waitAlerts(t, 1)

	bad := cfg
	bad.Tick = 20 * time.Millisecond
	if err := r.svc.Reload(t.Context(), bad); !errors.Is(err, evaluator.ErrReload) ||
		err.Error() != "config not reloaded, the old one stays in force: evaluator.tick changed from 10ms to 20ms: it cannot change while running; restart the evaluator to apply it" {
		t.Fatalf("fixed setting: %v", err)
	}
	bad = cfg
	bad.Severity = "page"
	if err := r.svc.Reload(t.Context(), bad); err == nil ||
		err.Error() != `config not reloaded, the old one stays in force: evaluator.severity is "page": use info, warning or critical` {
		t.Fatalf("invalid: %v", err)
	}
	good := cfg
	good.Receivers = []string{"pager"}
	if err := r.svc.Reload(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	h.publish(t, connected(t, "d1", "n1", t0+50_000), connected(t, "d2", "n1", t0+50_000),
		disconnected(t, "d2", "n1", t0+50_000, t0+51_000, events.ReasonClosed))
	h.clock.set(t0 + 90_000)
	got := h.waitAlerts(t, 3)
	if a := got[1].alert; a.Receiver != "pager" || a.Status != events.StatusResolved || a.Devices[0].DeviceID != "d1" {
		t.Fatalf("recovery after reload: %+v", a)
	}
	if a := got[2].alert; a.Receiver != "pager" || a.Status != events.StatusFiring || a.Devices[0].DeviceID != "d2" {
		t.Fatalf("new outage after reload: %+v", a)
	}
	// Correlation turned on by a reload: two devices of n1 down within a
	// minute of d2's outage fold into one group_outage.
	corr := good
	corr.Correlation = tracker.Correlation{Keys: []string{"node"}, Window: time.Minute, MinDevices: 3}
	if err := r.svc.Reload(t.Context(), corr); err != nil {
		t.Fatal(err)
	}
	h.publish(t, connected(t, "d3", "n1", t0), connected(t, "d4", "n1", t0),
		disconnected(t, "d3", "n1", t0, t0+100_000, events.ReasonClosed), disconnected(t, "d4", "n1", t0, t0+101_000, events.ReasonClosed))
	h.clock.set(t0 + 140_000)
	got = h.waitAlerts(t, 6)
	if a := got[3].alert; a.Kind != events.AlertGroupOutage || a.Receiver != "pager" || a.GroupKey != `group_outage:root{node="n1"}` || a.DevicesTotal != 2 {
		t.Fatalf("group_outage after reload: %+v", a)
	}
	if a, b := got[4].alert, got[5].alert; !a.Inhibited || !b.Inhibited || a.Devices[0].DeviceID != "d3" || b.Devices[0].DeviceID != "d4" {
		t.Fatalf("inhibited after reload: %+v %+v", a, b)
	}
	if n := telemetrytest.Int64s(t, r.metrics, "fleetwatch_evaluator_reloads", "")[""]; n != 2 {
		t.Fatalf("reloads metric %d", n)
	}
}

// TestAPIWithLeases: with lease partitions, a replica answers for the
// devices of the units it owns, answers 409 with a JSON error naming the
// unit for the others, and 409 for lists that span several units.
func TestAPIWithLeases(t *testing.T) {
	h := newHarness(t)
	cfg := apiConfig(t)
	cfg.Lease = leaseConfig("a", 4).Lease
	a := h.start(t, cfg)
	c := client{t: t, base: "http://" + a.svc.APIAddr()}
	waitFor(t, "replica a owning every unit", func() bool { return len(a.svc.Owned()) == 4 })
	h.publish(t, connected(t, "plant1-a", "n1", t0))
	waitFor(t, "plant1-a known", func() bool {
		code, _ := c.do("GET", "/api/v1/devices/plant1-a", "", "", nil)
		return code == 200
	})
	if code, msg := c.do("GET", "/api/v1/devices", "", "", nil); code != 409 ||
		msg != "replica a owns lease partitions [0 1 2 3] of 4: this query needs exactly one (evaluator.lease.partitions 1), ask for a single device instead" {
		t.Fatalf("list over 4 units: %d %s", code, msg)
	}

	cfg.Lease.Replica = "b"
	b := h.start(t, cfg)
	waitFor(t, "two units each", func() bool { return len(a.svc.Owned()) == 2 && len(b.svc.Owned()) == 2 })
	// A device of a unit that b owns, asked of a.
	var id string
	for i := 0; id == ""; i++ {
		d := fmt.Sprintf("dev-%d", i)
		if slices.Contains(b.svc.Owned(), events.Partition(d, events.DefaultPartitions)%4) {
			id = d
		}
	}
	unit := events.Partition(id, events.DefaultPartitions) % 4
	want := fmt.Sprintf("replica a does not own lease partition %d of 4, where this device lives (it owns [%d %d]): ask the replica that does",
		unit, a.svc.Owned()[0], a.svc.Owned()[1])
	if code, msg := c.do("GET", "/api/v1/devices/"+id, "", "", nil); code != 409 || msg != want {
		t.Fatalf("device of b's unit asked of a: %d %q, want 409 %q", code, msg, want)
	}
}
