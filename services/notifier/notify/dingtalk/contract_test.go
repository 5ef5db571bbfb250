package dingtalk

import (
	"net/http"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/notifytest"
)

// TestContractCodes classifies every row of DingTalk's errcode table in
// shared/contracts/chat.md (and the errcodes chatsim answers besides) and
// checks the exact class and hint.
func TestContractCodes(t *testing.T) {
	const P, R, L, D = events.OutcomePermanent, events.OutcomeRetryable, events.OutcomeRateLimited, events.OutcomeDelivered
	const (
		tokenHint   = "the access token does not exist: copy the robot's whole webhook URL again"
		blockHint   = "DingTalk blocked the robot for 10 minutes (over 20 messages per minute): holding messages until the block ends"
		tooLongHint = "the message is over DingTalk's 20000-byte limit: the notifier's byte budget failed (a bug)"
		badHint     = "DingTalk rejected the request as malformed: a notifier bug, report it with the errmsg"
	)
	cases := []notifytest.ContractCase{
		{"ok", 0, 200, nil, `{"errcode":0,"errmsg":"ok"}`, D, 0, ""},
		{"busy", -1, 200, nil, `{"errcode":-1,"errmsg":"系统繁忙"}`, R, 0, "DingTalk is busy: retrying with backoff"},
		{"send too fast", 410100, 200, nil, `{"errcode":410100,"errmsg":"send too fast, exceed 20 times per minute"}`, L, 10 * time.Minute, blockHint},
		{"send too fast (old)", 130101, 200, nil, `{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}`, L, 10 * time.Minute, blockHint},
		{"per-IP throttle", 1111, 200, nil, `{"status":1111,"punish":"deny","wait":5}`, L, 5 * time.Minute,
			"DingTalk throttles this notifier's IP (punish: deny): waiting at least 5 minutes"},
		{"keyword", 310000, 200, nil, `{"errcode":310000,"errmsg":"keywords not in content"}`, P, 0,
			`the robot's keywords do not include "告警": add keyword 告警 to the robot (or set keyword to one of the robot's keywords)`},
		{"sign", 310000, 200, nil, `{"errcode":310000,"errmsg":"sign not match"}`, P, 0,
			"secret does not match: copy the robot's signing secret (SEC…) verbatim, or turn signing off on the robot"},
		{"timestamp: re-sign once", 310000, 200, nil, `{"errcode":310000,"errmsg":"invalid timestamp"}`, R, 0,
			"DingTalk says our timestamp is more than an hour off its clock: re-signing; check the host's time sync"},
		{"ip allowlist", 310000, 200, nil, `{"errcode":310000,"errmsg":"ip 203.0.113.7 not in whitelist"}`, P, 0,
			"IP 203.0.113.7 not allowlisted: add the notifier's egress IP to the robot's IP allowlist"},
		{"other security", 310000, 200, nil, `{"errcode":310000,"errmsg":"security check failed"}`, P, 0,
			"a security setting of the robot (keyword, signature, IP allowlist) rejected the message"},
		{"token 300001", 300001, 200, nil, `{"errcode":300001,"errmsg":"token is not exist"}`, P, 0, tokenHint},
		{"token 300005", 300005, 200, nil, `{"errcode":300005,"errmsg":"token is not exist"}`, P, 0, tokenHint},
		{"token 400101", 400101, 200, nil, `{"errcode":400101,"errmsg":"access_token不存在"}`, P, 0, tokenHint},
		{"robot disabled", 400102, 200, nil, `{"errcode":400102,"errmsg":"机器人已停用"}`, P, 0, "the robot is disabled: enable it in the group's robot settings"},
		{"group gone", 400013, 200, nil, `{"errcode":400013,"errmsg":"群已被解散"}`, P, 0,
			"the robot's group no longer exists: add a robot to a live group and update the URL"},
		{"robot not found", 400106, 200, nil, `{"errcode":400106,"errmsg":"robot 不存在"}`, P, 0,
			"the robot was not found (deleted?): create a robot and update the URL"},
		{"too long", 460101, 200, nil, `{"errcode":460101,"errmsg":"message too long"}`, P, 0, tooLongHint},
		{"too long (old)", 101002, 200, nil, `{"errcode":101002,"errmsg":"message too long"}`, P, 0, tooLongHint},
		{"missing parameter (chatsim)", 40035, 200, nil, `{"errcode":40035,"errmsg":"缺少参数 json"}`, P, 0, badHint},
		{"bad Content-Type (chatsim)", 43004, 200, nil, `{"errcode":43004,"errmsg":"无效的HTTP HEADER Content-Type"}`, P, 0, badHint},
		{"HTTP 5xx", 502, 502, nil, `<html>bad gateway</html>`, R, 0, "the chat service or a proxy failed; retrying"},
	}
	classify := func(status int, h http.Header, body []byte) notify.Result { return Classify(status, h, body, "告警") }
	notifytest.CheckContract(t, classify, codes, cases)
}
