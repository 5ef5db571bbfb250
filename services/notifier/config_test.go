package notifier

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
	"gopkg.in/yaml.v3"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Receivers = []Receiver{
		{Name: "ops-dt", Channel: "dingtalk", DingTalk: &dingtalk.Config{URLEnv: "DT_URL"}},
		{Name: "ops-fs", Channel: "feishu", Feishu: &feishu.Config{URLEnv: "FS_URL"}},
	}
	return c
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"no receivers", func(c *Config) { c.Receivers = nil }, "notifier.receivers is empty: add a receiver with a name, a channel (dingtalk, feishu, wecom, slack or webhook) and that channel's section"},
		{"no name", func(c *Config) { c.Receivers[0].Name = "" }, "notifier.receivers[0].name is empty: name the receiver, e.g. ops-dingtalk"},
		{"duplicate", func(c *Config) { c.Receivers[1].Name = "ops-dt"; c.Receivers[1] = c.Receivers[0] }, `notifier.receivers[1].name "ops-dt" is used twice: receiver names must be unique`},
		{"bad channel", func(c *Config) { c.Receivers[0].Channel = "teams" }, `notifier.receivers["ops-dt"].channel is "teams": use dingtalk, feishu, wecom, slack or webhook`},
		{"wecom section error", func(c *Config) {
			c.Receivers[0] = Receiver{Name: "w", Channel: "wecom", WeCom: &wecom.Config{URLEnv: "W", MsgType: "news"}}
		}, `notifier.receivers["w"].wecom.msg_type is "news": use markdown or text`},
		{"slack", func(c *Config) {
			c.Receivers[0] = Receiver{Name: "s", Channel: "slack", Slack: &slack.Config{URLEnv: "S"}}
		}, ""},
		{"webhook section error", func(c *Config) {
			c.Receivers[0] = Receiver{Name: "h", Channel: "webhook", Webhook: &webhook.Config{URLEnv: "H", MaxBytes: 10}}
		}, `notifier.receivers["h"].webhook.max_bytes is 10: use 0 (default 20000) or at least 2000`},
		{"slack rate limit", func(c *Config) { c.RateLimits.Slack[0].Count = 0 }, "notifier.rate_limits.slack[0].count is 0: allow at least 1 send per window"},
		{"missing section", func(c *Config) { c.Receivers[0].DingTalk = nil }, `notifier.receivers["ops-dt"] has channel dingtalk but no dingtalk section: add dingtalk: {url_env: …}`},
		{"other section", func(c *Config) { c.Receivers[1].DingTalk = &dingtalk.Config{URL: "x"} }, `notifier.receivers["ops-fs"] has channel feishu but also a dingtalk section: remove it`},
		{"channel section error", func(c *Config) { c.Receivers[0].DingTalk.URLEnv = "" }, `notifier.receivers["ops-dt"].dingtalk.url is empty: set url_env (or url_file, or url) to the robot's webhook URL`},
		{"feishu section error", func(c *Config) { c.Receivers[1].Feishu.Language = "fr" }, `notifier.receivers["ops-fs"].feishu.language: language "fr" is not supported: use zh or en`},
		{"receiver rate limit", func(c *Config) { c.Receivers[0].RateLimit = []ratelimit.Window{{Count: 0, Per: time.Minute}} }, `notifier.receivers["ops-dt"].rate_limit[0].count is 0: allow at least 1 send per window`},
		{"max attempts", func(c *Config) { c.MaxAttempts = -1 }, "notifier.max_attempts is -1: use 0 (retry forever) or a positive count such as 20"},
		{"backoff initial", func(c *Config) { c.Backoff.Initial = 0 }, "notifier.backoff.initial is 0s: use a positive duration such as 2s"},
		{"backoff max", func(c *Config) { c.Backoff.Max = time.Second }, "notifier.backoff.max 1s is below backoff.initial 2s: raise it, e.g. to 5m"},
		{"request timeout", func(c *Config) { c.RequestTimeout = 0 }, "notifier.request_timeout is 0s: use a positive duration such as 10s"},
		{"ack wait", func(c *Config) { c.AckWait = 20 * time.Second }, "notifier.ack_wait 20s is too short for request_timeout 10s: use at least 30s"},
		{"workers", func(c *Config) { c.Workers = 0 }, "notifier.workers is 0: use at least 1"},
		{"max ack pending", func(c *Config) { c.MaxAckPending = 2 }, "notifier.max_ack_pending 2 is below workers 4: raise it"},
		{"bucket", func(c *Config) { c.Idempotency.Bucket = "fleet.watch" }, `notifier.idempotency.bucket "fleet.watch" is not a KV bucket name: use letters, digits, - and _, e.g. fleetwatch_notified`},
		{"ttl", func(c *Config) { c.Idempotency.TTL = -time.Second }, "notifier.idempotency.ttl is negative: use 0 (forever) or a duration such as 840h"},
		{"kv replicas", func(c *Config) { c.Idempotency.Replicas = 0 }, "notifier.idempotency.replicas is 0: use 1 (single server) to 5 (usually 3 in a cluster)"},
		{"channel rate limit", func(c *Config) { c.RateLimits.Feishu[1].Per = 0 }, "notifier.rate_limits.feishu[1].per is 0s: use a positive duration such as 1m"},
		{"per-replica limits", func(c *Config) { c.RateLimits.Bucket = "" }, ""},
		{"budget bucket", func(c *Config) { c.RateLimits.Bucket = "a.b" }, `notifier.rate_limits.bucket "a.b" is not a KV bucket name: use letters, digits, - and _, e.g. fleetwatch_notifier_budget (or empty for per-replica limits)`},
		{"budget bucket is the idempotency bucket", func(c *Config) { c.RateLimits.Bucket = c.Idempotency.Bucket }, `notifier.rate_limits.bucket "fleetwatch_notified" is also the idempotency bucket: use another name`},
		{"digest max delay", func(c *Config) { c.Digest.MaxDelay = -time.Second }, "notifier.digest.max_delay is negative: use a duration such as 2s"},
		{"digest interval", func(c *Config) { c.Digest.Interval = 0 }, "notifier.digest.interval is 0s: use a positive duration such as 10s"},
		{"digest reserve", func(c *Config) { c.Digest.Reserve = 1 }, "notifier.digest.reserve is 1: use a share from 0 to below 1, e.g. 0.25"},
		{"digest max alerts", func(c *Config) { c.Digest.MaxAlerts = 1 }, "notifier.digest.max_alerts is 1: use at least 2, e.g. 10000"},
		{"digest top groups", func(c *Config) { c.Digest.TopGroups = 0 }, "notifier.digest.top_groups is 0: use at least 1, e.g. 5"},
		{"digest samples", func(c *Config) { c.Digest.Samples = 0 }, "notifier.digest.samples is 0: use at least 1, e.g. 50"},
		{"digest group by", func(c *Config) { c.Digest.GroupBy = []string{""} }, "notifier.digest.group_by[0] is empty: name a label such as site"},
		{"link base url", func(c *Config) { c.LinkBaseURL = "fleet.example.com" }, `notifier.link_base_url "fleet.example.com" is not an http(s) URL without query: use e.g. https://fleet.example.com`},
		{"actionCard without links", func(c *Config) { c.Receivers[0].DingTalk.MsgType = dingtalk.MsgActionCard },
			`notifier.receivers["ops-dt"].dingtalk: msg_type actionCard needs link_base_url (its buttons open the alert in fleetwatch): set notifier.link_base_url or notifier.receivers["ops-dt"].dingtalk.link_base_url, or use msg_type markdown`},
		{"actionCard with the notifier's link base url", func(c *Config) {
			c.Receivers[0].DingTalk.MsgType, c.LinkBaseURL = dingtalk.MsgActionCard, "https://fleet.example.com"
		}, ""},
		{"feishu post", func(c *Config) { c.Receivers[1].Feishu.MsgType = feishu.MsgPost }, ""},
		{"chain", func(c *Config) {
			c.Receivers[0].Escalate = []EscalationStep{{After: 30 * time.Minute, Receiver: "ops-fs"}}
		}, ""},
		{"chain to unknown receiver", func(c *Config) { c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute, Receiver: "oncall"}} },
			`notifier.receivers["ops-dt"].escalate[0].receiver "oncall" is not a configured receiver: add it to notifier.receivers or fix the name`},
		{"chain to itself", func(c *Config) { c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute, Receiver: "ops-dt"}} },
			`notifier.receivers["ops-dt"].escalate[0].receiver "ops-dt" is the receiver itself: escalate to another receiver`},
		{"chain without receiver", func(c *Config) { c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute}} },
			`notifier.receivers["ops-dt"].escalate[0].receiver is empty: name the receiver to notify, e.g. oncall-feishu`},
		{"chain after zero", func(c *Config) { c.Receivers[0].Escalate = []EscalationStep{{Receiver: "ops-fs"}} },
			`notifier.receivers["ops-dt"].escalate[0].after is 0s: use a positive duration such as 30m`},
		{"chain twice", func(c *Config) {
			c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute, Receiver: "ops-fs"}, {After: time.Hour, Receiver: "ops-fs"}}
		}, `notifier.receivers["ops-dt"].escalate[1].receiver "ops-fs" appears twice in the chain: keep its first step`},
		{"chain not increasing", func(c *Config) {
			c.Receivers = append(c.Receivers, Receiver{Name: "mgr", Channel: "slack", Slack: &slack.Config{URLEnv: "S"}})
			c.Receivers[0].Escalate = []EscalationStep{{After: time.Hour, Receiver: "ops-fs"}, {After: time.Hour, Receiver: "mgr"}}
		}, `notifier.receivers["ops-dt"].escalate[1].after 1h0m0s is not after the previous step's 1h0m0s: list steps in increasing after`},
		{"escalation bucket", func(c *Config) {
			c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute, Receiver: "ops-fs"}}
			c.Escalation.Bucket = c.RateLimits.Bucket
		}, `notifier.escalation.bucket "fleetwatch_notifier_budget" is also the idempotency or rate-limit bucket: use another name`},
		{"escalation check", func(c *Config) {
			c.Receivers[0].Escalate = []EscalationStep{{After: time.Minute, Receiver: "ops-fs"}}
			c.Escalation.Check = 0
		}, "notifier.escalation.check is 0s: use a positive duration such as 10s"},
		{"escalation settings unused without chains", func(c *Config) { c.Escalation.Check = 0 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			got := ""
			if err := c.Validate(); err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Fatalf("Validate() = %q\nwant         %q", got, tt.want)
			}
		})
	}
}

func TestConfigYAMLKeepsDefaults(t *testing.T) {
	c := DefaultConfig()
	src := `
receivers:
  - name: ops
    channel: feishu
    feishu: {url_env: FS_URL, keyword: 告警}
max_attempts: 5
`
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxAttempts != 5 || c.Backoff.Max != 5*time.Minute || len(c.RateLimits.DingTalk) != 1 || c.RateLimits.DingTalk[0] != (ratelimit.Window{Count: 18, Per: time.Minute}) ||
		c.Receivers[0].Feishu.Keyword != "告警" {
		t.Fatalf("config %+v", c)
	}
}

func TestNewErrors(t *testing.T) {
	c := validConfig()
	if _, err := New(c, Deps{}); err == nil || err.Error() != "notifier: deps.NATS is nil: pass a connected NATS client" {
		t.Fatalf("err = %v", err)
	}
	if _, err := NewNotifier(c.Receivers[0], nil, nil); err == nil || err.Error() != `receiver "ops-dt": dingtalk.url_env: environment variable DT_URL is not set` {
		t.Fatalf("err = %v", err)
	}
	t.Setenv("FS_URL", "https://open.feishu.cn/open-apis/bot/v2/hook/sekrit")
	n, err := NewNotifier(c.Receivers[1], nil, nil)
	if err != nil || n.Channel() != "feishu" {
		t.Fatalf("NewNotifier = %v, %v", n, err)
	}
}
