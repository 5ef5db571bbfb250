package notifier

import (
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
)

// ExampleConfig is a complete config file for the notifier binary
// (config.example.yaml), shown by --help.
//
//go:embed config.example.yaml
var ExampleConfig string

// Channel names.
const (
	ChannelDingTalk = dingtalk.Name
	ChannelFeishu   = feishu.Name
	ChannelWeCom    = wecom.Name
	ChannelSlack    = slack.Name
	ChannelWebhook  = webhook.Name
)

// Config is the notifier's section of the config file.
type Config struct {
	// Receivers are the chat robots alerts are routed to, by name.
	Receivers []Receiver `yaml:"receivers"`
	// MaxAttempts bounds the attempts of an alert that keeps failing with
	// a retryable error; the last one is recorded as permanent. Rate-limited
	// attempts never give up. 0: retry forever.
	MaxAttempts int `yaml:"max_attempts"`
	// Backoff spaces retries: Initial doubles per attempt up to Max, with
	// jitter. A remote's retry-after (rate limits, the DingTalk block) wins
	// when longer.
	Backoff Backoff `yaml:"backoff"`
	// RateLimits are the local per-receiver limits by channel, set below the
	// remote limits so the notifier never trips them (a DingTalk robot over
	// 20/min is blocked for 10 minutes).
	RateLimits RateLimits `yaml:"rate_limits"`
	// AckWait is how long JetStream waits for an ack before redelivering.
	AckWait time.Duration `yaml:"ack_wait"`
	// RequestTimeout bounds one HTTP request to a chat service.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// Workers deliver in parallel; one receiver's alerts stay on one worker,
	// in order.
	Workers int `yaml:"workers"`
	// MaxAckPending bounds the alerts in flight across all replicas.
	MaxAckPending int `yaml:"max_ack_pending"`
	// Idempotency configures the KV bucket of final outcomes.
	Idempotency Idempotency `yaml:"idempotency"`
	// Digest says when and how a receiver's pending alerts are merged
	// into one message.
	Digest Digest `yaml:"digest"`
	// LinkBaseURL is the root of the fleetwatch views that messages link
	// to: <link_base_url>/alerts/<fingerprint>, /devices/<device id> and
	// /alerts (digests). A receiver's channel section may set its own.
	// Empty: no links.
	LinkBaseURL string `yaml:"link_base_url"`
	// Escalation configures where the receivers' escalation chains keep
	// their state.
	Escalation Escalation `yaml:"escalation"`
}

// Escalation configures the escalation chains' KV bucket. A chain itself
// is a receiver's escalate list.
type Escalation struct {
	// Bucket is the NATS KV bucket with one record per alert episode of a
	// receiver that has a chain (created only when some receiver has one).
	Bucket string `yaml:"bucket"`
	// Check is the longest wait between two looks at the due records;
	// records are also advanced at their exact due time. It is also the
	// retry interval after a failure.
	Check time.Duration `yaml:"check"`
	// Retention is how long a record is kept after its last change: a
	// chain waiting longer than that for its alert to resolve is lost,
	// and a finished record is remembered that long so that a replayed
	// firing notification does not start the chain again. Keep it at
	// least the ALERTS stream's max age.
	Retention time.Duration `yaml:"retention"`
}

// EscalationStep is one link of a receiver's escalation chain.
type EscalationStep struct {
	// After is how long the alert must have been unresolved (since it
	// started) before Receiver is notified too.
	After time.Duration `yaml:"after"`
	// Receiver is the receiver to notify.
	Receiver string `yaml:"receiver"`
}

// Digest configures the storm behaviour: when a receiver's budget cannot
// carry its pending alerts one by one, they are merged into one digest
// message (counts, top groups, sample devices) instead of being queued
// behind the limit or dropped.
type Digest struct {
	// MaxDelay: pending alerts go out one by one only if the rate limits
	// let all of them go within MaxDelay; otherwise they are merged.
	MaxDelay time.Duration `yaml:"max_delay"`
	// Interval is the least time between a receiver's messages while it
	// is digesting: alerts arriving meanwhile join the next digest.
	Interval time.Duration `yaml:"interval"`
	// Reserve is the share of every budget window (those longer than
	// max_delay) that one-by-one messages leave free for digests.
	Reserve float64 `yaml:"reserve"`
	// MaxAlerts bounds the alerts folded into one digest.
	MaxAlerts int `yaml:"max_alerts"`
	// GroupBy are the label names (device labels, then group labels) that
	// make a digest's groups.
	GroupBy []string `yaml:"group_by"`
	// TopGroups and Samples bound the groups and devices a digest lists;
	// the rest are counted ("+N more").
	TopGroups int `yaml:"top_groups"`
	Samples   int `yaml:"samples"`
}

// Receiver is one named chat destination.
type Receiver struct {
	// Name is what AlertEvent.Receiver refers to.
	Name string `yaml:"name"`
	// Channel is dingtalk, feishu, wecom, slack or webhook; the section of
	// that name configures it.
	Channel  string           `yaml:"channel"`
	DingTalk *dingtalk.Config `yaml:"dingtalk"`
	Feishu   *feishu.Config   `yaml:"feishu"`
	WeCom    *wecom.Config    `yaml:"wecom"`
	Slack    *slack.Config    `yaml:"slack"`
	Webhook  *webhook.Config  `yaml:"webhook"`
	// RateLimit overrides the channel's local rate limit for this receiver.
	RateLimit []ratelimit.Window `yaml:"rate_limit"`
	// Escalate is the receiver's escalation chain: when an alert sent to
	// this receiver is still unresolved After its start, a copy goes to
	// Receiver as well, and its resolved notification follows it. Steps
	// are in increasing After. Alerts of the evaluator's escalation tiers
	// (tier > 0) and copies made by a chain do not start a chain.
	Escalate []EscalationStep `yaml:"escalate"`
}

// Backoff is an exponential backoff.
type Backoff struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// RateLimits are the notifier's own per-receiver limits by channel.
type RateLimits struct {
	// Bucket is the NATS KV bucket that holds every receiver's send log,
	// so the limits hold across all notifier replicas (compare-and-set per
	// receiver). Empty: each replica limits on its own (one replica only).
	Bucket   string             `yaml:"bucket"`
	DingTalk []ratelimit.Window `yaml:"dingtalk"`
	Feishu   []ratelimit.Window `yaml:"feishu"`
	WeCom    []ratelimit.Window `yaml:"wecom"`
	Slack    []ratelimit.Window `yaml:"slack"`
	Webhook  []ratelimit.Window `yaml:"webhook"`
}

// Idempotency configures the NATS KV bucket that records, per alert id,
// the final outcome of its delivery.
type Idempotency struct {
	// Bucket is the KV bucket name.
	Bucket string `yaml:"bucket"`
	// TTL is how long an outcome is remembered; keep it at least the
	// ALERTS stream's max age so a replay does not re-send.
	TTL time.Duration `yaml:"ttl"`
	// Replicas of the bucket: 1 in development, 3 in production.
	Replicas int `yaml:"replicas"`
}

// DefaultConfig returns the defaults; receivers must be added.
func DefaultConfig() Config {
	return Config{
		MaxAttempts: 20,
		Backoff:     Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute},
		RateLimits: RateLimits{
			Bucket:   "fleetwatch_notifier_budget",
			DingTalk: []ratelimit.Window{{Count: 18, Per: time.Minute}},
			Feishu:   []ratelimit.Window{{Count: 4, Per: time.Second}, {Count: 95, Per: time.Minute}},
			WeCom:    []ratelimit.Window{{Count: 18, Per: time.Minute}},
			Slack:    []ratelimit.Window{{Count: 1, Per: time.Second}, {Count: 50, Per: time.Minute}},
			Webhook:  []ratelimit.Window{{Count: 10, Per: time.Second}},
		},
		AckWait:        time.Minute,
		RequestTimeout: 10 * time.Second,
		Workers:        4,
		MaxAckPending:  20000,
		Idempotency:    Idempotency{Bucket: "fleetwatch_notified", TTL: 35 * 24 * time.Hour, Replicas: 1},
		Digest: Digest{MaxDelay: 2 * time.Second, Interval: 10 * time.Second, Reserve: 0.25, MaxAlerts: 10000,
			GroupBy: []string{"site"}, TopGroups: 5, Samples: 50},
		Escalation: Escalation{Bucket: "fleetwatch_notifier_escalations", Check: 10 * time.Second, Retention: 35 * 24 * time.Hour},
	}
}

// receiver returns r with the notifier-wide defaults its channel section
// leaves unset (link_base_url); r itself is not changed.
func (c Config) receiver(r Receiver) Receiver {
	if c.LinkBaseURL == "" {
		return r
	}
	link := func(s *string) {
		if *s == "" {
			*s = c.LinkBaseURL
		}
	}
	switch {
	case r.DingTalk != nil:
		x := *r.DingTalk
		link(&x.LinkBaseURL)
		r.DingTalk = &x
	case r.Feishu != nil:
		x := *r.Feishu
		link(&x.LinkBaseURL)
		r.Feishu = &x
	case r.WeCom != nil:
		x := *r.WeCom
		link(&x.LinkBaseURL)
		r.WeCom = &x
	case r.Slack != nil:
		x := *r.Slack
		link(&x.LinkBaseURL)
		r.Slack = &x
	case r.Webhook != nil:
		x := *r.Webhook
		link(&x.LinkBaseURL)
		r.Webhook = &x
	}
	return r
}

var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the settings without reading secrets or touching the
// network.
func (c Config) Validate() error {
	if len(c.Receivers) == 0 {
		return errors.New("notifier.receivers is empty: add a receiver with a name, a channel (dingtalk, feishu, wecom, slack or webhook) and that channel's section")
	}
	if err := notify.CheckLinkBaseURL("notifier", c.LinkBaseURL); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, r := range c.Receivers {
		field := fmt.Sprintf("notifier.receivers[%d]", i)
		if err := c.receiver(r).validate(field); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("%s.name %q is used twice: receiver names must be unique", field, r.Name)
		}
		seen[r.Name] = true
	}
	chains := false
	for _, r := range c.Receivers {
		if err := r.validateChain(seen); err != nil {
			return err
		}
		chains = chains || len(r.Escalate) > 0
	}
	if chains {
		if err := c.Escalation.validate(c); err != nil {
			return err
		}
	}
	switch {
	case c.MaxAttempts < 0:
		return fmt.Errorf("notifier.max_attempts is %d: use 0 (retry forever) or a positive count such as 20", c.MaxAttempts)
	case c.Backoff.Initial <= 0:
		return fmt.Errorf("notifier.backoff.initial is %s: use a positive duration such as 2s", c.Backoff.Initial)
	case c.Backoff.Max < c.Backoff.Initial:
		return fmt.Errorf("notifier.backoff.max %s is below backoff.initial %s: raise it, e.g. to 5m", c.Backoff.Max, c.Backoff.Initial)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("notifier.request_timeout is %s: use a positive duration such as 10s", c.RequestTimeout)
	case c.AckWait < 2*c.RequestTimeout+10*time.Second:
		return fmt.Errorf("notifier.ack_wait %s is too short for request_timeout %s: use at least %s", c.AckWait, c.RequestTimeout, 2*c.RequestTimeout+10*time.Second)
	case c.Workers < 1:
		return fmt.Errorf("notifier.workers is %d: use at least 1", c.Workers)
	case c.MaxAckPending < c.Workers:
		return fmt.Errorf("notifier.max_ack_pending %d is below workers %d: raise it", c.MaxAckPending, c.Workers)
	case !bucketName.MatchString(c.Idempotency.Bucket):
		return fmt.Errorf("notifier.idempotency.bucket %q is not a KV bucket name: use letters, digits, - and _, e.g. fleetwatch_notified", c.Idempotency.Bucket)
	case c.Idempotency.TTL < 0:
		return fmt.Errorf("notifier.idempotency.ttl is negative: use 0 (forever) or a duration such as 840h")
	case c.Idempotency.Replicas < 1 || c.Idempotency.Replicas > 5:
		return fmt.Errorf("notifier.idempotency.replicas is %d: use 1 (single server) to 5 (usually 3 in a cluster)", c.Idempotency.Replicas)
	case c.RateLimits.Bucket != "" && !bucketName.MatchString(c.RateLimits.Bucket):
		return fmt.Errorf("notifier.rate_limits.bucket %q is not a KV bucket name: use letters, digits, - and _, e.g. fleetwatch_notifier_budget (or empty for per-replica limits)", c.RateLimits.Bucket)
	case c.RateLimits.Bucket != "" && c.RateLimits.Bucket == c.Idempotency.Bucket:
		return fmt.Errorf("notifier.rate_limits.bucket %q is also the idempotency bucket: use another name", c.RateLimits.Bucket)
	}
	if err := c.Digest.validate(); err != nil {
		return err
	}
	for _, ch := range []struct {
		name string
		ws   []ratelimit.Window
	}{{"dingtalk", c.RateLimits.DingTalk}, {"feishu", c.RateLimits.Feishu}, {"wecom", c.RateLimits.WeCom},
		{"slack", c.RateLimits.Slack}, {"webhook", c.RateLimits.Webhook}} {
		for i, w := range ch.ws {
			if err := w.Validate(fmt.Sprintf("notifier.rate_limits.%s[%d]", ch.name, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e Escalation) validate(c Config) error {
	switch {
	case !bucketName.MatchString(e.Bucket):
		return fmt.Errorf("notifier.escalation.bucket %q is not a KV bucket name: use letters, digits, - and _, e.g. fleetwatch_notifier_escalations", e.Bucket)
	case e.Bucket == c.Idempotency.Bucket || e.Bucket == c.RateLimits.Bucket:
		return fmt.Errorf("notifier.escalation.bucket %q is also the idempotency or rate-limit bucket: use another name", e.Bucket)
	case e.Check <= 0:
		return fmt.Errorf("notifier.escalation.check is %s: use a positive duration such as 10s", e.Check)
	case e.Retention < 0:
		return fmt.Errorf("notifier.escalation.retention is negative: use 0 (forever) or a duration such as 840h")
	}
	return nil
}

// validateChain checks r's escalation chain against the receiver names.
func (r Receiver) validateChain(names map[string]bool) error {
	field := fmt.Sprintf("notifier.receivers[%q].escalate", r.Name)
	used := map[string]bool{}
	var last time.Duration
	for i, s := range r.Escalate {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case s.Receiver == "":
			return fmt.Errorf("%s.receiver is empty: name the receiver to notify, e.g. oncall-feishu", f)
		case !names[s.Receiver]:
			return fmt.Errorf("%s.receiver %q is not a configured receiver: add it to notifier.receivers or fix the name", f, s.Receiver)
		case s.Receiver == r.Name:
			return fmt.Errorf("%s.receiver %q is the receiver itself: escalate to another receiver", f, s.Receiver)
		case used[s.Receiver]:
			return fmt.Errorf("%s.receiver %q appears twice in the chain: keep its first step", f, s.Receiver)
		case s.After <= 0:
			return fmt.Errorf("%s.after is %s: use a positive duration such as 30m", f, s.After)
		case s.After <= last:
			return fmt.Errorf("%s.after %s is not after the previous step's %s: list steps in increasing after", f, s.After, last)
		}
		used[s.Receiver], last = true, s.After
	}
	return nil
}

func (d Digest) validate() error {
	switch {
	case d.MaxDelay < 0:
		return fmt.Errorf("notifier.digest.max_delay is negative: use a duration such as 2s")
	case d.Interval <= 0:
		return fmt.Errorf("notifier.digest.interval is %s: use a positive duration such as 10s", d.Interval)
	case d.Reserve < 0 || d.Reserve >= 1:
		return fmt.Errorf("notifier.digest.reserve is %g: use a share from 0 to below 1, e.g. 0.25", d.Reserve)
	case d.MaxAlerts < 2:
		return fmt.Errorf("notifier.digest.max_alerts is %d: use at least 2, e.g. 10000", d.MaxAlerts)
	case d.TopGroups < 1:
		return fmt.Errorf("notifier.digest.top_groups is %d: use at least 1, e.g. 5", d.TopGroups)
	case d.Samples < 1:
		return fmt.Errorf("notifier.digest.samples is %d: use at least 1, e.g. 50", d.Samples)
	}
	for i, k := range d.GroupBy {
		if k == "" {
			return fmt.Errorf("notifier.digest.group_by[%d] is empty: name a label such as site", i)
		}
	}
	return nil
}

func (r Receiver) validate(field string) error {
	if r.Name == "" {
		return fmt.Errorf("%s.name is empty: name the receiver, e.g. ops-dingtalk", field)
	}
	field = fmt.Sprintf("notifier.receivers[%q]", r.Name)
	sections := []struct {
		channel string
		set     bool
		check   func(string) error
	}{
		{ChannelDingTalk, r.DingTalk != nil, func(f string) error { return r.DingTalk.Validate(f) }},
		{ChannelFeishu, r.Feishu != nil, func(f string) error { return r.Feishu.Validate(f) }},
		{ChannelWeCom, r.WeCom != nil, func(f string) error { return r.WeCom.Validate(f) }},
		{ChannelSlack, r.Slack != nil, func(f string) error { return r.Slack.Validate(f) }},
		{ChannelWebhook, r.Webhook != nil, func(f string) error { return r.Webhook.Validate(f) }},
	}
	known := false
	for _, sec := range sections {
		if sec.channel == r.Channel {
			known = true
			if !sec.set {
				return fmt.Errorf("%s has channel %s but no %s section: add %s: {url_env: …}", field, r.Channel, r.Channel, r.Channel)
			}
			if err := sec.check(field + "." + sec.channel); err != nil {
				return err
			}
		}
	}
	if !known {
		return fmt.Errorf("%s.channel is %q: use dingtalk, feishu, wecom, slack or webhook", field, r.Channel)
	}
	for _, sec := range sections {
		if sec.set && sec.channel != r.Channel {
			return fmt.Errorf("%s has channel %s but also a %s section: remove it", field, r.Channel, sec.channel)
		}
	}
	for i, w := range r.RateLimit {
		if err := w.Validate(fmt.Sprintf("%s.rate_limit[%d]", field, i)); err != nil {
			return err
		}
	}
	return nil
}
