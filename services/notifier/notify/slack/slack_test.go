package slack

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

func alert(status events.AlertStatus, n, idLen int) events.AlertEvent {
	a := events.AlertEvent{Fingerprint: "fp", Receiver: "ops", Status: status, Kind: events.AlertDeviceOffline,
		Severity: events.SeverityWarning, GroupLabels: map[string]string{"site": "sh-01&2"}, StartsAtMS: 1714528800000, DevicesTotal: n}
	if status == events.StatusResolved {
		a.EndsAtMS = a.StartsAtMS + 60_000
	}
	for i := range min(n, events.MaxAlertDevices) {
		a.Devices = append(a.Devices, events.AlertDevice{DeviceID: fmt.Sprintf("dev-%d-%s", i, strings.Repeat("x", idLen)), SinceMS: a.StartsAtMS})
	}
	a, err := events.NewAlertEvent(a)
	if err != nil {
		panic(err)
	}
	return a
}

func startSim(t *testing.T, robots ...chatsim.Robot) *chatsim.Server {
	t.Helper()
	return notifytest.StartSim(t, chatsim.Config{Slack: robots})
}

func TestEndpointAndConfig(t *testing.T) {
	if _, err := Endpoint("https://hooks.slack.com/services/T1/B2/sekrit"); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"T1/B2/sekrit", "https://hooks.slack.com/other/sekrit", "ftp://hooks.slack.com/services/sekrit"} {
		if _, err := Endpoint(raw); err == nil || strings.Contains(err.Error(), "sekrit") {
			t.Errorf("Endpoint(%q) err = %v", raw, err)
		}
	}
	if err := (Config{URLEnv: "X", MentionUserIDs: []string{"<@U1>"}}).Validate("slack"); err == nil ||
		err.Error() != `slack.mention_user_ids[0] "<@U1>" is not a Slack user id: use the U… id` {
		t.Fatalf("err = %v", err)
	}
	if err := (Config{}).Validate("slack"); err == nil || err.Error() != "slack.url is empty: set url_env (or url_file, or url) to the incoming webhook URL" {
		t.Fatalf("err = %v", err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status     int
		header     http.Header
		body       string
		outcome    events.Outcome
		retryAfter time.Duration
	}{
		{200, nil, "ok", events.OutcomeDelivered, 0},
		{200, nil, "<html>captive portal</html>", events.OutcomeRetryable, 0},
		{400, nil, "invalid_payload", events.OutcomePermanent, 0},
		{403, nil, "invalid_token", events.OutcomePermanent, 0},
		{404, nil, "channel_not_found", events.OutcomePermanent, 0},
		{410, nil, "channel_is_archived", events.OutcomePermanent, 0},
		{429, http.Header{"Retry-After": {"7"}}, "rate_limited", events.OutcomeRateLimited, 7 * time.Second},
		{429, http.Header{}, "rate_limited", events.OutcomeRateLimited, time.Second},
		{500, nil, "", events.OutcomeRetryable, 0},
		{503, nil, "", events.OutcomeRetryable, 0},
	}
	for _, tt := range tests {
		h := tt.header
		if h == nil {
			h = http.Header{}
		}
		r := Classify(tt.status, h, []byte(tt.body))
		if r.Outcome != tt.outcome || r.RetryAfter != tt.retryAfter || r.HTTPStatus != tt.status || (r.Outcome != events.OutcomeDelivered && r.Hint == "") {
			t.Errorf("Classify(%d, %q) = %+v", tt.status, tt.body, r)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"ok", "invalid_payload", "channel_is_archived", ""} {
		f.Add(200, s, "1")
		f.Add(429, s, "x")
	}
	f.Fuzz(func(t *testing.T, status int, body, retry string) {
		r := Classify(status, http.Header{"Retry-After": {retry}}, []byte(body))
		if r.Outcome == events.OutcomeDelivered && (status != 200 || strings.TrimSpace(body) != "ok") {
			t.Fatalf("delivered on %d %q", status, body)
		}
		if r.Outcome == events.OutcomeRateLimited && r.RetryAfter < time.Second {
			t.Fatalf("rate limited without a wait: %+v", r)
		}
	})
}

func TestSendBlocks(t *testing.T) {
	sim := startSim(t, chatsim.Robot{Name: "ops", Token: "T1/B2/tok", Keywords: []string{"alert"}})
	n, err := New(Config{URL: sim.SlackURL("T1/B2/tok"), Keyword: "alert", MentionUserIDs: []string{"U123"}, MentionChannel: true, Timezone: "UTC"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1714528800, 0)
	contents := []notify.Content{
		notify.AlertContent(alert(events.StatusFiring, 500, 60)), // far over the section limit untruncated
		notify.AlertContent(alert(events.StatusResolved, 1, 0)),
		notify.DigestContent(digest.Fold("ops", []events.AlertEvent{alert(events.StatusFiring, 3, 0), alert(events.StatusResolved, 2, 0)}, digest.Options{})),
		notify.TestContent("ops", clock),
	}
	for i, c := range contents {
		if r, err := n.Send(t.Context(), c); err != nil {
			t.Fatalf("content %d: %+v %v", i, r, err)
		}
		clock = clock.Add(time.Second)
		sim.AddRobot(chatsim.Slack, chatsim.Robot{Name: "ops", Token: "T1/B2/tok", Keywords: []string{"alert"}}) // reset its rate limit
	}
	msgs := sim.Messages()
	if len(msgs) != 4 {
		t.Fatalf("%d messages", len(msgs))
	}
	wantTitles := []string{"[alert] 500 devices offline · site=sh-01&2", "[alert] Resolved: dev-0- back online after 1m · site=sh-01&2",
		"[alert] Digest: 3 devices firing, 2 devices resolved", "[alert] Test message · ops"}
	for i, m := range msgs {
		if m.Title != wantTitles[i] {
			t.Errorf("message %d title %q", i, m.Title)
		}
		if strings.Contains(m.Text, "**") || !strings.Contains(m.Text, "<!channel> <@U123>") {
			t.Errorf("message %d text:\n%s", i, m.Text)
		}
	}
	if !strings.Contains(msgs[0].Text, "+") || !strings.Contains(msgs[0].Text, "more") || !strings.Contains(msgs[0].Text, "site=sh-01&amp;2") {
		t.Errorf("firing text:\n%s", msgs[0].Text)
	}
	var b struct {
		Blocks []struct {
			Text struct{ Text string } `json:"text"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(msgs[0].Body, &b); err != nil || utf8.RuneCountInString(b.Blocks[1].Text.Text) > MaxSectionChars {
		t.Fatalf("section %d chars, %v", utf8.RuneCountInString(b.Blocks[1].Text.Text), err)
	}
}

func TestSendFailures(t *testing.T) {
	sim := startSim(t,
		chatsim.Robot{Name: "ok", Token: "T/B/ok"},
		chatsim.Robot{Name: "archived", Token: "T/B/arch", Archived: true},
		chatsim.Robot{Name: "gone", Token: "T/B/gone", ChannelNotFound: true},
	)
	tests := []struct {
		token   string
		status  int
		outcome events.Outcome
	}{
		{"T/B/unknown", 403, events.OutcomePermanent},
		{"T/B/arch", 410, events.OutcomePermanent},
		{"T/B/gone", 404, events.OutcomePermanent},
	}
	for _, tt := range tests {
		n, _ := New(Config{URL: sim.SlackURL(tt.token)}, nil)
		r, err := n.Notify(t.Context(), alert(events.StatusFiring, 1, 0))
		if err == nil || r.HTTPStatus != tt.status || r.Outcome != tt.outcome || strings.Contains(err.Error(), tt.token) {
			t.Errorf("%s: %+v %v", tt.token, r, err)
		}
	}
	n, _ := New(Config{URL: sim.SlackURL("T/B/ok")}, nil)
	if _, err := n.Notify(t.Context(), alert(events.StatusFiring, 1, 0)); err != nil {
		t.Fatal(err)
	}
	r, _ := n.Notify(t.Context(), alert(events.StatusFiring, 1, 0))
	if r.Outcome != events.OutcomeRateLimited || r.HTTPStatus != 429 || r.RetryAfter != time.Second {
		t.Fatalf("second message within a second: %+v", r)
	}
	sim.FailNext(chatsim.Slack, "T/B/ok", 1, 503)
	sim.AddRobot(chatsim.Slack, chatsim.Robot{Name: "ok", Token: "T/B/ok"})
	sim.FailNext(chatsim.Slack, "T/B/ok", 1, 503)
	if r, _ := n.Notify(t.Context(), alert(events.StatusFiring, 1, 0)); r.Outcome != events.OutcomeRetryable || r.HTTPStatus != 503 {
		t.Fatalf("503: %+v", r)
	}
}
