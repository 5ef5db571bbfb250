package wecom

import (
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

// TestContractCodes classifies every errcode of WeCom in
// shared/contracts/chat.md (and the errcodes chatsim answers besides) and
// checks the exact class and hint.
func TestContractCodes(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	const badHint = "WeCom rejected the message format: a notifier bug, report it with the errmsg"
	cases := []notifytest.ContractCase{
		{"ok", 0, 200, nil, `{"errcode":0,"errmsg":"ok"}`, D, 0, ""},
		{"busy", -1, 200, nil, `{"errcode":-1,"errmsg":"system busy"}`, R, 0, "WeCom is busy: retrying with backoff"},
		{"rate limited", 45009, 200, nil, `{"errcode":45009,"errmsg":"api freq out of limit"}`, L, time.Minute,
			"WeCom limits a robot to 20 messages per minute: holding messages for the rolling minute"},
		{"invalid URL", 93000, 200, nil, `{"errcode":93000,"errmsg":"invalid webhook url"}`, P, 0,
			"the webhook URL is invalid (the key does not exist or the robot was removed): copy the robot's whole webhook URL again"},
		{"too long", 40058, 200, nil, `{"errcode":40058,"errmsg":"content exceed max length"}`, P, 0,
			"the message is over WeCom's length limit: the notifier's byte budget failed (a bug)"},
		{"bad JSON (chatsim)", 40008, 200, nil, `{"errcode":40008,"errmsg":"invalid message type"}`, P, 0, badHint},
		{"empty content (chatsim)", 44004, 200, nil, `{"errcode":44004,"errmsg":"text.content empty"}`, P, 0, badHint},
	}
	notifytest.CheckContract(t, Classify, codes, cases)
}
