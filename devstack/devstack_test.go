package devstack_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/devstack"
	"github.com/fleetwatch/fleetwatch/devstack/simulator"
)

func TestDevAPIFleetAndOutage(t *testing.T) {
	cfg := devstack.DefaultConfig()
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.MQTTListen = "127.0.0.1:0"
	cfg.ClickHouseAddr = ""
	cfg.Simulator.Devices = 4
	cfg.Simulator.Sites = 2
	cfg.Simulator.DropInterval = 0
	st, err := devstack.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})

	fleet := func() simulator.Stats {
		var s simulator.Stats
		code, body := call(t, "GET", st.HTTPURL()+"/api/fleet")
		if code != http.StatusOK {
			t.Fatalf("GET /api/fleet: %d %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		return s
	}
	eventually(t, func() bool { return fleet().Online == 4 })

	for query, want := range map[string]string{
		"fraction=2":   "fraction must be a number in (0, 1]",
		"for=forever":  "for must be a duration in (0, 1h]",
		"for=2h":       "for must be a duration in (0, 1h]",
		"site=abc":     "site must be one letter",
		"fraction=abc": "fraction must be a number",
	} {
		code, body := call(t, "POST", st.HTTPURL()+"/api/outage?"+query)
		if code != http.StatusBadRequest || !strings.Contains(body, want) || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("POST /api/outage?%s = %d %s, want 400 with a JSON error containing %q", query, code, body, want)
		}
	}

	// Site a holds devices 0 and 2.
	code, body := call(t, "POST", st.HTTPURL()+"/api/outage?site=a&fraction=1&for=1h")
	if code != http.StatusOK || !strings.Contains(body, `"dropped":2`) {
		t.Fatalf("outage: %d %s, want 2 devices dropped", code, body)
	}
	eventually(t, func() bool { s := fleet(); return s.Online == 2 && s.Offline == 2 && s.Drops == 2 })

	// The inbox page is served beside the API.
	if code, body := call(t, "GET", st.HTTPURL()+"/"); code != http.StatusOK || !strings.Contains(body, "<html") {
		t.Errorf("GET / = %d, want the inbox page", code)
	}
}

func call(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestValidateNodeHealth(t *testing.T) {
	cfg := devstack.DefaultConfig()
	cfg.Simulator.Devices = 0
	for _, tc := range []struct {
		h    devstack.NodeHealth
		want string
	}{
		{devstack.NodeHealth{}, ""},
		{devstack.NodeHealth{SilentAfter: 2 * time.Second, Heartbeat: 500 * time.Millisecond}, ""},
		{devstack.NodeHealth{SilentAfter: 2 * time.Second}, "node health: heartbeat 0s must be positive and below silent_after 2s"},
		{devstack.NodeHealth{SilentAfter: time.Second, Heartbeat: time.Second}, "node health: heartbeat 1s must be positive and below silent_after 1s"},
	} {
		cfg.NodeHealth = tc.h
		err := cfg.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("Validate with %+v = %v, want %q", tc.h, err, tc.want)
		}
	}
}
