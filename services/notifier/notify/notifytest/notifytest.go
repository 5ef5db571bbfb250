// Package notifytest holds what the channel packages' tests share: a
// strict chat server per test, secret files, the table checks of
// endpoints and config errors, and the check of a channel's code table
// against shared/contracts/chat.md.
package notifytest

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
)

// StartSim starts a strict chat server with cfg on a free local port and
// closes it when the test ends.
func StartSim(t *testing.T, cfg chatsim.Config) *chatsim.Server {
	t.Helper()
	s := chatsim.New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// SecretFile writes s to a file of its own and returns the file's path.
func SecretFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Offline is a firing device_offline alert of receiver ops for site
// sh-01 with n devices named by idOf, as the DingTalk and Feishu tests
// render it.
func Offline(n int, sev events.Severity, idOf func(int) string) events.AlertEvent {
	a := events.AlertEvent{
		Fingerprint: "fp-1", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: sev, GroupKey: "site=sh-01", GroupLabels: map[string]string{"site": "sh-01"},
		StartsAtMS: 1700000000000, CreatedAtMS: 1700000000000,
	}
	for i := range n {
		a.Devices = append(a.Devices, events.AlertDevice{DeviceID: idOf(i), Status: events.StatusFiring, Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout, SinceMS: 1700000000000})
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

// Simple names device i "dev-i".
func Simple(i int) string { return fmt.Sprintf("dev-%d", i) }

// EndpointCase is one webhook URL (or bare token) and what Endpoint makes
// of it: the URL Want, or an error containing Err.
type EndpointCase struct {
	Raw, Base, Want, Err string
}

// CheckEndpoints runs endpoint over the cases. An error must contain the
// case's Err and never token, the secret part of the raw URLs.
func CheckEndpoints(t *testing.T, endpoint func(raw, base string) (*url.URL, error), token string, cases []EndpointCase) {
	t.Helper()
	for _, tt := range cases {
		u, err := endpoint(tt.Raw, tt.Base)
		if tt.Err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.Err) || strings.Contains(err.Error(), token) {
				t.Errorf("Endpoint(%q) err = %v, want %q without the token", tt.Raw, err, tt.Err)
			}
			continue
		}
		if err != nil || u.String() != tt.Want {
			t.Errorf("Endpoint(%q) = %v, %v; want %s", tt.Raw, u, err, tt.Want)
		}
	}
}

// ValidateCase is one config and the exact error Validate must return
// ("" for none). It is an unnamed struct type so that tables can list
// their rows without field names.
type ValidateCase[C any] = struct {
	Cfg  C
	Want string
}

// CheckValidate runs validate(cfg, field) over the cases.
func CheckValidate[C any](t *testing.T, field string, validate func(C, string) error, cases []ValidateCase[C]) {
	t.Helper()
	for _, tt := range cases {
		got := ""
		if err := validate(tt.Cfg, field); err != nil {
			got = err.Error()
		}
		if got != tt.Want {
			t.Errorf("Validate(%+v) = %q, want %q", tt.Cfg, got, tt.Want)
		}
	}
}

// ContractCase is one row of a channel's code table in
// shared/contracts/chat.md: an answer carrying Code and the exact class
// the notifier must make of it. It is an unnamed struct type so that the
// channels' tables can list their rows without field names.
type ContractCase = struct {
	// Name says which row (and which variant of it) this is.
	Name string
	// Code is the remote's code (the HTTP status for a channel that
	// answers with statuses); the answer is Status, Header and Body.
	Code   int64
	Status int
	Header http.Header
	Body   string
	// Outcome, RetryAfter and Hint are the exact class.
	Outcome    events.Outcome
	RetryAfter time.Duration
	Hint       string
}

// CheckContract classifies every case's answer with classify and checks
// the exact class, and that the cases cover every code of the channel's
// table, so that a code added to the table needs its contract row here.
func CheckContract(t *testing.T, classify notify.Classifier, table notify.Codes, cases []ContractCase) {
	t.Helper()
	covered := map[int64]bool{}
	for _, tt := range cases {
		covered[tt.Code] = true
		r := classify(tt.Status, tt.Header, []byte(tt.Body))
		if r.Outcome != tt.Outcome || r.RetryAfter != tt.RetryAfter || r.Hint != tt.Hint || r.HTTPStatus != tt.Status {
			t.Errorf("%s (code %d): got %s, retry after %s, hint %q\nwant %s, retry after %s, hint %q",
				tt.Name, tt.Code, r.Outcome, r.RetryAfter, r.Hint, tt.Outcome, tt.RetryAfter, tt.Hint)
		}
	}
	for code := range table.Known {
		if !covered[code] {
			t.Errorf("code %d is in the table but has no contract case", code)
		}
	}
}
