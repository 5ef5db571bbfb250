package slack

import (
	"net/http"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

// TestContractCodes classifies every HTTP status Slack answers with in
// shared/contracts/chat.md and checks the exact class and hint.
func TestContractCodes(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	cases := []notifytest.ContractCase{
		{"ok", 200, 200, nil, "ok", D, 0, ""},
		{"200 without ok", 200, 200, nil, "<html>captive portal</html>", R, 0, `HTTP 200 without "ok": is a proxy answering instead of Slack?`},
		{"invalid_payload", 400, 400, nil, "invalid_payload", P, 0, "Slack rejected the payload (invalid_payload): a notifier bug, report it"},
		{"forbidden", 403, 403, nil, "invalid_token", P, 0,
			"Slack refused the webhook (invalid_token): it was revoked or the app lost access; create a new incoming webhook"},
		{"channel_not_found", 404, 404, nil, "channel_not_found", P, 0,
			"the webhook's channel or the webhook itself does not exist (channel_not_found): create a new incoming webhook"},
		{"channel_is_archived", 410, 410, nil, "channel_is_archived", P, 0,
			"the webhook's channel is archived: unarchive it or create a webhook for another channel"},
		{"rate limited", 429, 429, http.Header{"Retry-After": {"7"}}, "rate_limited", L, 7 * time.Second,
			"Slack allows about one message per second per webhook: waiting for Retry-After"},
		{"rate limited without Retry-After", 429, 429, nil, "rate_limited", L, time.Second,
			"Slack allows about one message per second per webhook: waiting for Retry-After"},
		{"5xx", 503, 503, nil, "", R, 0, "the chat service or a proxy failed; retrying"},
	}
	notifytest.CheckContract(t, Classify, statuses, cases)
}
