package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

func alert(n, idLen int) events.AlertEvent {
	a := events.AlertEvent{Fingerprint: "fp", Receiver: "ops", Status: events.StatusFiring, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityCritical, StartsAtMS: 1714528800000, DevicesTotal: n}
	for i := range min(n, events.MaxAlertDevices) {
		a.Devices = append(a.Devices, events.AlertDevice{DeviceID: fmt.Sprintf("dev-%d-%s", i, strings.Repeat("设", idLen)), SinceMS: a.StartsAtMS})
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

var secretFile = notifytest.SecretFile

func TestSignMatchesChatsim(t *testing.T) {
	body := []byte(`{"kind":"alert"}`)
	got := Sign("s3cret", 1700000000, body)
	if got != chatsim.WebhookSign("s3cret", "1700000000", body) || !strings.HasPrefix(got, "sha256=") || len(got) != 7+64 {
		t.Fatalf("Sign = %s", got)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status     int
		header     http.Header
		outcome    events.Outcome
		retryAfter time.Duration
	}{
		{200, nil, events.OutcomeDelivered, 0},
		{204, nil, events.OutcomeDelivered, 0},
		{401, nil, events.OutcomePermanent, 0},
		{413, nil, events.OutcomePermanent, 0},
		{429, http.Header{"Retry-After": {"30"}}, events.OutcomeRateLimited, 30 * time.Second},
		{429, nil, events.OutcomeRateLimited, time.Second},
		{408, nil, events.OutcomeRetryable, 0},
		{502, nil, events.OutcomeRetryable, 0},
	}
	for _, tt := range tests {
		h := tt.header
		if h == nil {
			h = http.Header{}
		}
		r := Classify(tt.status, h, nil)
		if r.Outcome != tt.outcome || r.RetryAfter != tt.retryAfter || r.RemoteCode != fmt.Sprint(tt.status) || (r.Outcome != events.OutcomeDelivered && r.Hint == "") {
			t.Errorf("Classify(%d) = %+v", tt.status, r)
		}
	}
}

func TestSendSignedPayload(t *testing.T) {
	clock := time.Now()
	sim := chatsim.New(chatsim.Config{Webhook: []chatsim.Robot{{Name: "hook", Token: "tok", Secret: "s3cret", Keywords: []string{"告警"}}}, Now: func() time.Time { return clock }})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	n, err := New(Config{URL: sim.WebhookURL("tok"), SecretFile: secretFile(t, "s3cret"), Keyword: "告警"}, nil, func() time.Time { return clock })
	if err != nil {
		t.Fatal(err)
	}
	big := alert(5000, 60) // 100 listed ids of 60 runes: over 20000 bytes as JSON
	d := digest.Fold("ops", []events.AlertEvent{alert(2, 1), alert(3, 1)}, digest.Options{})
	for i, c := range []notify.Content{notify.AlertContent(big), notify.DigestContent(d), notify.TestContent("ops", clock)} {
		r, err := n.Send(t.Context(), c)
		if err != nil || r.Outcome != events.OutcomeDelivered || r.Bytes > DefaultMaxBytes {
			t.Fatalf("content %d: %+v %v", i, r, err)
		}
	}
	msgs := sim.Messages()
	if len(msgs) != 3 || !msgs[0].Signed {
		t.Fatalf("messages %+v", msgs)
	}
	var p Payload
	if err := json.Unmarshal(msgs[0].Body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Version != 1 || p.Kind != "alert" || p.ID != big.ID || p.Alert == nil || p.Alert.DevicesTotal != 5000 || len(p.Alert.Devices) == 0 ||
		len(p.Alert.Devices) >= 100 || !strings.HasPrefix(p.Title, "【告警】") || !p.Firing || p.Severity != events.SeverityCritical {
		t.Fatalf("payload kind %s id %s devices %d/%d title %q", p.Kind, p.ID, len(p.Alert.Devices), p.Alert.DevicesTotal, p.Title)
	}
	if err := json.Unmarshal(msgs[1].Body, &p); err != nil || p.Kind != "digest" || p.Digest == nil || p.Digest.FiringDevices != 5 || len(p.Digest.AlertIDs) != 2 {
		t.Fatalf("digest payload %+v %v", p.Digest, err)
	}

	// A wrong secret and a stale clock are refused with 401: permanent.
	wrong, _ := New(Config{URL: sim.WebhookURL("tok"), SecretFile: secretFile(t, "other"), Keyword: "告警"}, nil, func() time.Time { return clock })
	stale, _ := New(Config{URL: sim.WebhookURL("tok"), SecretFile: secretFile(t, "s3cret"), Keyword: "告警"}, nil, func() time.Time { return clock.Add(-time.Hour) })
	for _, bad := range []*Notifier{wrong, stale} {
		r, err := bad.Notify(t.Context(), alert(1, 1))
		if err == nil || r.Outcome != events.OutcomePermanent || r.HTTPStatus != 401 || !strings.Contains(r.Hint, "secret") {
			t.Fatalf("bad signature: %+v", r)
		}
	}
}
