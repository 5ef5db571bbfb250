package notifier

import (
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
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
}

// Receiver is one named chat destination.
type Receiver struct {
	// Name is what AlertEvent.Receiver refers to.
	Name string `yaml:"name"`
	// Channel is dingtalk or feishu; the section of that name configures it.
	Channel  string           `yaml:"channel"`
	DingTalk *dingtalk.Config `yaml:"dingtalk"`
	Feishu   *feishu.Config   `yaml:"feishu"`
	// RateLimit overrides the channel's local rate limit for this receiver.
	RateLimit []ratelimit.Window `yaml:"rate_limit"`
}

// Backoff is an exponential backoff.
type Backoff struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// RateLimits are local rate limits per channel.
type RateLimits struct {
	DingTalk []ratelimit.Window `yaml:"dingtalk"`
	Feishu   []ratelimit.Window `yaml:"feishu"`
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
			DingTalk: []ratelimit.Window{{Count: 18, Per: time.Minute}},
			Feishu:   []ratelimit.Window{{Count: 4, Per: time.Second}, {Count: 95, Per: time.Minute}},
		},
		AckWait:        time.Minute,
		RequestTimeout: 10 * time.Second,
		Workers:        4,
		MaxAckPending:  256,
		Idempotency:    Idempotency{Bucket: "fleetwatch_notified", TTL: 35 * 24 * time.Hour, Replicas: 1},
	}
}

var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Validate checks the settings without reading secrets or touching the
// network.
func (c Config) Validate() error {
	if len(c.Receivers) == 0 {
		return errors.New("notifier.receivers is empty: add a receiver with a name, a channel (dingtalk or feishu) and that channel's section")
	}
	seen := map[string]bool{}
	for i, r := range c.Receivers {
		field := fmt.Sprintf("notifier.receivers[%d]", i)
		if err := r.validate(field); err != nil {
			return err
		}
		if seen[r.Name] {
			return fmt.Errorf("%s.name %q is used twice: receiver names must be unique", field, r.Name)
		}
		seen[r.Name] = true
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
	}
	for i, w := range c.RateLimits.DingTalk {
		if err := w.Validate(fmt.Sprintf("notifier.rate_limits.dingtalk[%d]", i)); err != nil {
			return err
		}
	}
	for i, w := range c.RateLimits.Feishu {
		if err := w.Validate(fmt.Sprintf("notifier.rate_limits.feishu[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

func (r Receiver) validate(field string) error {
	if r.Name == "" {
		return fmt.Errorf("%s.name is empty: name the receiver, e.g. ops-dingtalk", field)
	}
	field = fmt.Sprintf("notifier.receivers[%q]", r.Name)
	switch r.Channel {
	case ChannelDingTalk:
		if r.DingTalk == nil {
			return fmt.Errorf("%s has channel dingtalk but no dingtalk section: add dingtalk: {url_env: …}", field)
		}
		if r.Feishu != nil {
			return fmt.Errorf("%s has channel dingtalk but also a feishu section: remove it", field)
		}
		if err := r.DingTalk.Validate(field + ".dingtalk"); err != nil {
			return err
		}
	case ChannelFeishu:
		if r.Feishu == nil {
			return fmt.Errorf("%s has channel feishu but no feishu section: add feishu: {url_env: …}", field)
		}
		if r.DingTalk != nil {
			return fmt.Errorf("%s has channel feishu but also a dingtalk section: remove it", field)
		}
		if err := r.Feishu.Validate(field + ".feishu"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s.channel is %q: use dingtalk or feishu", field, r.Channel)
	}
	for i, w := range r.RateLimit {
		if err := w.Validate(fmt.Sprintf("%s.rate_limit[%d]", field, i)); err != nil {
			return err
		}
	}
	return nil
}
