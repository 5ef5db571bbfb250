package feishu

import (
	"net/http"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

// TestContractCodes classifies every row of Feishu's code table in
// shared/contracts/chat.md and checks the exact class and hint.
func TestContractCodes(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	const frequencyHint = "Feishu limits a bot to 5 messages per second and 100 per minute: retrying after a pause"
	reset := http.Header{"X-Ogw-Ratelimit-Reset": {"3"}}
	cases := []notifytest.ContractCase{
		{"ok", 0, 200, nil, `{"code":0,"msg":"success"}`, D, 0, ""},
		{"ok (legacy)", 0, 200, nil, `{"StatusCode":0,"StatusMessage":"success"}`, D, 0, ""},
		{"frequency limited", 11232, 200, nil, `{"code":11232,"msg":"frequency limited"}`, L, time.Second, frequencyHint},
		{"frequency limited", 11247, 200, nil, `{"code":11247,"msg":"frequency limited"}`, L, time.Second, frequencyHint},
		{"frequency limited with reset", 11232, 200, reset, `{"code":11232,"msg":"frequency limited"}`, L, 3 * time.Second, frequencyHint},
		{"HTTP 429", 429, 429, http.Header{"X-Ogw-Ratelimit-Reset": {"7"}}, ``, L, 7 * time.Second,
			"Feishu's platform limiter answered 429: waiting for x-ogw-ratelimit-reset"},
		{"platform limiter", 99991400, 200, reset, `{"code":99991400,"msg":"request trigger frequency limit"}`, L, 3 * time.Second,
			"Feishu's platform limiter: waiting for x-ogw-ratelimit-reset"},
		{"bad request", 9499, 200, nil, `{"code":9499,"msg":"Bad Request"}`, P, 0,
			"Feishu rejected the request (format or size over 20 KB): a notifier bug, report it with the msg"},
		{"bad request: too many requests", 9499, 200, nil, `{"code":9499,"msg":"too many requests"}`, L, time.Second,
			"Feishu says too many requests: retrying after a pause"},
		{"token invalid", 19001, 200, nil, `{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}`, P, 0,
			"the webhook token is invalid: copy the bot's whole webhook URL again"},
		{"bad msg_type", 19002, 200, nil, `{"code":19002,"msg":"params error, msg_type need"}`, P, 0,
			"Feishu rejected the msg_type: a notifier bug, report it"},
		{"sign or timestamp", 19021, 200, nil, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time"}`, P, 0,
			"secret does not match (or the clock is more than an hour off): copy the bot's signing secret verbatim and check the host's time sync"},
		{"IP not allowed", 19022, 200, nil, `{"code":19022,"msg":"Ip Not Allowed"}`, P, 0,
			"IP not allowlisted: add the notifier's egress IP to the bot's IP allowlist"},
		{"keywords", 19024, 200, nil, `{"code":19024,"msg":"Key Words Not Found"}`, P, 0,
			`the bot's keywords do not include "告警": add keyword 告警 to the bot (or set keyword to one of the bot's keywords)`},
		{"card too large", 19036, 200, nil, `{"code":19036,"msg":"card size exceeds"}`, P, 0,
			"the card is over Feishu's 30 KB limit: the notifier's byte budget failed (a bug)"},
	}
	classify := func(status int, h http.Header, body []byte) notify.Result { return Classify(status, h, body, "告警") }
	notifytest.CheckContract(t, classify, codes, cases)
}
