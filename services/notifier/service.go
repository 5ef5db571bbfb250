package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/fleetwatch/fleetwatch/services/notifier/escalate"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Stage is the stage name used in dead letters and telemetry.
const Stage = "notifier"

// Notifier sends one message (an alert, a digest, a test message) to one
// receiver and classifies the outcome. The channel packages implement it.
type Notifier interface {
	Send(ctx context.Context, c notify.Content) (notify.Result, error)
	Channel() string
}

// Deps are the notifier's collaborators.
type Deps struct {
	// NATS is a connected client (required).
	NATS *nats.Conn
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TracerProvider and MeterProvider default to the otel globals.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// HTTPClient sends the webhooks (default: a client with the
	// configured request timeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now); it also times the signatures
	// and the rate limits.
	Now func() time.Time
	// SleepUntil waits until the Now clock reads t or ctx ends, reporting
	// whether t was reached (default: a real timer for t minus Now). The
	// service computes t from the Now it based its decision on, so a clock
	// that jumps between that reading and the call cannot stretch the
	// wait. Tests with a fast or jumping clock pass a matching SleepUntil.
	SleepUntil func(ctx context.Context, t time.Time) bool
}

// NewNotifier builds the channel notifier of one receiver, reading its
// URL and secret. It is what a "send a test message" command needs.
func NewNotifier(r Receiver, client *http.Client, now func() time.Time) (Notifier, error) {
	if err := r.validate("receiver"); err != nil {
		return nil, err
	}
	var (
		n   Notifier
		err error
	)
	switch r.Channel {
	case ChannelDingTalk:
		n, err = dingtalk.New(*r.DingTalk, client, now)
	case ChannelFeishu:
		n, err = feishu.New(*r.Feishu, client, now)
	case ChannelWeCom:
		n, err = wecom.New(*r.WeCom, client)
	case ChannelSlack:
		n, err = slack.New(*r.Slack, client)
	default:
		n, err = webhook.New(*r.Webhook, client, now)
	}
	if err != nil {
		return nil, fmt.Errorf("receiver %q: %w", r.Name, err)
	}
	return n, nil
}

var (
	_ Notifier = (*dingtalk.Notifier)(nil)
	_ Notifier = (*feishu.Notifier)(nil)
	_ Notifier = (*wecom.Notifier)(nil)
	_ Notifier = (*slack.Notifier)(nil)
	_ Notifier = (*webhook.Notifier)(nil)
)

// Service is the running notifier stage.
type Service struct {
	cfg        Config
	nc         *nats.Conn
	js         jetstream.JetStream
	log        *slog.Logger
	tracer     trace.Tracer
	now        func() time.Time
	sleepUntil func(ctx context.Context, t time.Time) bool
	receivers  map[string]*receiver
	metrics    metrics

	kv     atomic.Pointer[jetstream.KeyValue]
	budget ratelimit.Store
	ready  atomic.Bool
	// chains are the receivers' escalation chains; esc runs them (nil
	// until Run, and when no receiver has a chain).
	chains map[string][]escalate.Step
	esc    *escalator
}

// New validates cfg, reads the receivers' secrets and prepares the service.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil {
		return nil, errors.New("notifier: deps.NATS is nil: pass a connected NATS client")
	}
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("notifier: jetstream: %w", err)
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.TracerProvider == nil {
		deps.TracerProvider = otel.GetTracerProvider()
	}
	if deps.MeterProvider == nil {
		deps.MeterProvider = otel.GetMeterProvider()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.SleepUntil == nil {
		now := deps.Now
		deps.SleepUntil = func(ctx context.Context, t time.Time) bool { return sleep(ctx, t.Sub(now())) }
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: cfg.RequestTimeout}
	}
	s := &Service{
		cfg:        cfg,
		nc:         deps.NATS,
		js:         js,
		log:        deps.Logger,
		tracer:     deps.TracerProvider.Tracer("github.com/fleetwatch/fleetwatch/services/notifier"),
		now:        deps.Now,
		sleepUntil: deps.SleepUntil,
		receivers:  map[string]*receiver{},
		budget:     ratelimit.NewMemory(),
	}
	if s.metrics, err = newMetrics(deps.MeterProvider); err != nil {
		return nil, err
	}
	s.chains = map[string][]escalate.Step{}
	for _, r := range cfg.Receivers {
		n, err := NewNotifier(cfg.receiver(r), deps.HTTPClient, deps.Now)
		if err != nil {
			return nil, err
		}
		s.receivers[r.Name] = newReceiver(r.Name, n, cfg.windows(r), cfg.Digest)
		for _, st := range r.Escalate {
			s.chains[r.Name] = append(s.chains[r.Name], escalate.Step{After: st.After, Receiver: st.Receiver})
		}
	}
	return s, nil
}

// windows are the rate-limit windows of r: its own, else its channel's.
func (c Config) windows(r Receiver) []ratelimit.Window {
	if len(r.RateLimit) > 0 {
		return r.RateLimit
	}
	switch r.Channel {
	case ChannelFeishu:
		return c.RateLimits.Feishu
	case ChannelWeCom:
		return c.RateLimits.WeCom
	case ChannelSlack:
		return c.RateLimits.Slack
	case ChannelWebhook:
		return c.RateLimits.Webhook
	}
	return c.RateLimits.DingTalk
}

// Ready returns nil while the service is consuming alerts.
func (s *Service) Ready() error {
	if !s.ready.Load() {
		return errors.New("notifier is not consuming alerts")
	}
	return nil
}

// Run creates the KV buckets and the durable consumer, then delivers
// alerts until ctx ends. In-flight deliveries finish (bounded by the
// request timeout); alerts still waiting are nak'ed for immediate
// redelivery.
func (s *Service) Run(ctx context.Context) error {
	kv, err := events.EnsureKeyValue(ctx, s.js, jetstream.KeyValueConfig{
		Bucket:      s.cfg.Idempotency.Bucket,
		Description: "fleetwatch notifier: final delivery outcome per alert id",
		History:     1,
		TTL:         s.cfg.Idempotency.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Idempotency.Replicas,
	})
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	s.kv.Store(&kv)
	if b := s.cfg.RateLimits.Bucket; b != "" {
		bkv, err := events.EnsureKeyValue(ctx, s.js, jetstream.KeyValueConfig{
			Bucket:      b,
			Description: "fleetwatch notifier: recent sends and pauses per receiver, shared by every replica",
			History:     1,
			TTL:         2 * time.Hour,
			Storage:     jetstream.FileStorage,
			Replicas:    s.cfg.Idempotency.Replicas,
		})
		if err != nil {
			return fmt.Errorf("notifier: %w", err)
		}
		s.budget = ratelimit.NewKV(bkv)
	}
	if len(s.chains) > 0 {
		ekv, err := events.EnsureKeyValue(ctx, s.js, jetstream.KeyValueConfig{
			Bucket:      s.cfg.Escalation.Bucket,
			Description: "fleetwatch notifier: escalation chain state per alert episode, shared by every replica",
			History:     1,
			TTL:         s.cfg.Escalation.Retention,
			Storage:     jetstream.FileStorage,
			Replicas:    s.cfg.Idempotency.Replicas,
		})
		if err != nil {
			return fmt.Errorf("notifier: %w", err)
		}
		s.esc = newEscalator(ekv, s.js, s.chains, s)
		if err := s.esc.watch(ctx); err != nil {
			return fmt.Errorf("notifier: %w", err)
		}
	}
	cons, err := events.EnsureConsumer(ctx, s.js, events.StreamAlerts,
		events.ConsumerConfig(events.ConsumerNotifier, events.AlertsPrefix+".>", s.cfg.AckWait, s.cfg.MaxAckPending))
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}

	// Deliveries finish on their own context so a shutdown does not cut a
	// request in half; it is cancelled if they overrun the grace period.
	procCtx, cancelProc := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProc()
	var senders sync.WaitGroup
	for _, r := range s.receivers {
		senders.Go(func() { s.sendLoop(ctx, procCtx, r) })
	}
	if s.esc != nil {
		senders.Go(func() { s.esc.run(ctx) })
	}
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	var keeper sync.WaitGroup
	keeper.Go(func() { s.keepAlive(keepCtx) })

	// Intake workers check and queue alerts; one receiver's alerts stay
	// on one worker, in stream order.
	var stopping atomic.Bool
	queues := make([]chan jetstream.Msg, s.cfg.Workers)
	var workers sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan jetstream.Msg, 64)
		q := queues[i]
		workers.Go(func() {
			for m := range q {
				if stopping.Load() {
					_ = m.Nak()
					continue
				}
				s.intake(procCtx, m)
			}
		})
	}
	stopWorkers := func() {
		for _, q := range queues {
			close(q)
		}
		workers.Wait()
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		h := fnv.New32a()
		_, _ = h.Write([]byte(m.Subject()))
		select {
		case queues[h.Sum32()%uint32(len(queues))] <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(min(s.cfg.MaxAckPending, 512)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Warn("consuming alerts", "err", err)
		}))
	if err != nil {
		stopWorkers()
		senders.Wait()
		stopKeep()
		keeper.Wait()
		return fmt.Errorf("notifier: consume alerts: %w", err)
	}
	s.ready.Store(true)
	s.log.Info("delivering alerts", "receivers", len(s.receivers), "workers", s.cfg.Workers, "shared_budget", s.cfg.RateLimits.Bucket != "")

	<-ctx.Done()
	s.ready.Store(false)
	stopping.Store(true)
	cc.Stop()
	<-cc.Closed()
	stopWorkers()
	done := make(chan struct{})
	go func() { senders.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2*s.cfg.RequestTimeout + 5*time.Second):
		cancelProc()
		<-done
	}
	stopKeep()
	keeper.Wait()
	// Whatever still waits goes back to JetStream for another replica.
	for _, r := range s.receivers {
		for _, p := range r.drain() {
			p.nak()
		}
	}
	return nil
}

// keepAlive tells JetStream, every third of the ack wait, that the alerts
// waiting for a digest or a retry are still being worked on, so they are
// not redelivered while held.
func (s *Service) keepAlive(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.AckWait/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, r := range s.receivers {
			for _, p := range r.heldSnapshot() {
				p.inProgress()
			}
		}
	}
}

// intake checks one alert message and queues it for its receiver, or
// settles it at once (bad, silenced, unknown receiver, already delivered).
func (s *Service) intake(ctx context.Context, msg jetstream.Msg) {
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := s.tracer.Start(ctx, "notifier.intake", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.destination.name", msg.Subject())))
	defer span.End()
	// The message may have waited in the client buffer: restart its ack
	// timer so JetStream does not redeliver it while it is handled.
	_ = msg.InProgress()

	attempt := 1
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 0 {
		attempt = int(md.NumDelivered)
	}
	var a events.AlertEvent
	if err := json.Unmarshal(msg.Data(), &a); err != nil {
		s.deadLetter(ctx, msg, attempt, "alert is not valid JSON: "+err.Error())
		return
	}
	if err := a.Validate(); err != nil {
		s.deadLetter(ctx, msg, attempt, err.Error())
		return
	}
	span.SetAttributes(attribute.String("fleetwatch.alert_id", a.ID), attribute.String("fleetwatch.receiver", a.Receiver),
		attribute.Int("fleetwatch.attempt", attempt))
	log := s.log.With("alert_id", a.ID, "receiver", a.Receiver, "status", a.Status, "attempt", attempt)

	note, copied := escalationNote(msg.Headers())
	if s.esc.chained(a, copied) {
		// The chain's record changes before the ack: a redelivery applies
		// it again, harmlessly.
		if err := s.esc.observe(ctx, a); err != nil {
			log.Warn("recording the alert in its escalation chain", "err", err)
			s.nak(msg, attempt, 0, log)
			return
		}
	}
	switch {
	case a.Silenced:
		// Recorded in ALERTS by the evaluator; not delivered. A
		// DeliveryEvent has no outcome for it (events.Outcome), so it is
		// counted and logged.
		log.Debug("silenced: not delivered", "silence_ids", a.SilenceIDs)
		s.metrics.alert(ctx, "silenced")
		s.ack(ctx, msg, log)
		return
	case a.Inhibited:
		log.Debug("inhibited: folded into another alert, not delivered", "inhibited_by", a.InhibitedBy)
		s.metrics.alert(ctx, "inhibited")
		s.ack(ctx, msg, log)
		return
	}
	rcv := s.receivers[a.Receiver]
	if rcv == nil {
		res := notify.Result{Outcome: events.OutcomePermanent,
			Hint: fmt.Sprintf("receiver %q is not configured: add it to notifier.receivers or fix the evaluator's routes", a.Receiver)}
		log.Error("alert for an unknown receiver", "hint", res.Hint)
		if err := s.publishDelivery(ctx, a, "unknown", attempt, res); err != nil {
			log.Warn("recording the delivery", "err", err)
			s.nak(msg, attempt, 0, log)
			return
		}
		s.metrics.alert(ctx, "unknown_receiver")
		s.ack(ctx, msg, log)
		return
	}
	kv := *s.kv.Load()
	if _, err := kv.Get(ctx, kvKey(a.ID)); err == nil {
		log.Debug("already delivered: not sending again")
		s.metrics.alert(ctx, "duplicate")
		s.ack(ctx, msg, log)
		return
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		log.Warn("reading the delivery record", "err", err)
		s.nak(msg, attempt, 0, log)
		return
	}
	p := &pending{msg: msg, alert: a, attempt: attempt, link: trace.LinkFromContext(ctx), note: note}
	switch rcv.push(p) {
	case pushQueued:
		s.metrics.held(ctx, rcv.name, 1)
	case pushDone:
		// Delivered a moment ago by this replica.
		s.metrics.alert(ctx, "duplicate")
		s.ack(ctx, msg, log)
	}
}

// record is the KV value kept per alert id.
type record struct {
	AlertID    string         `json:"alert_id"`
	Receiver   string         `json:"receiver"`
	Channel    string         `json:"channel"`
	Outcome    events.Outcome `json:"outcome"`
	Attempt    int            `json:"attempt"`
	RemoteCode string         `json:"remote_code,omitempty"`
	AtMS       int64          `json:"at_ms"`
	// Digest is the id of the digest the alert was folded into.
	Digest string `json:"digest,omitempty"`
}

var kvKeyRe = regexp.MustCompile(`^[-_=.a-zA-Z0-9]+$`)

// kvKey is the alert id when it is a valid KV key (content ids are), else
// a hash of it.
func kvKey(id string) string {
	if kvKeyRe.MatchString(id) && id[0] != '.' && id[len(id)-1] != '.' {
		return id
	}
	return "h_" + events.ContentID("alert-id", id)
}

func (s *Service) deliveryMsg(ctx context.Context, a events.AlertEvent, channel string, attempt int, res notify.Result) (*nats.Msg, error) {
	d, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID: a.ID, Fingerprint: a.Fingerprint, AlertStatus: a.Status, Receiver: a.Receiver, Channel: channel,
		Attempt: attempt, Outcome: res.Outcome, HTTPStatus: res.HTTPStatus, RemoteCode: res.RemoteCode,
		RemoteMessage: res.RemoteMessage, Hint: res.Hint, Bytes: res.Bytes, LatencyMS: res.Latency.Milliseconds(),
		AtMS: s.now().UnixMilli(),
	})
	if err != nil {
		return nil, fmt.Errorf("delivery event: %w", err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode delivery event: %w", err)
	}
	m := nats.NewMsg(d.Subject())
	m.Data = data
	m.Header.Set(events.HeaderMsgID, d.ID)
	telemetry.Inject(ctx, m)
	return m, nil
}

func (s *Service) publishDelivery(ctx context.Context, a events.AlertEvent, channel string, attempt int, res notify.Result) error {
	m, err := s.deliveryMsg(ctx, a, channel, attempt, res)
	if err != nil {
		return err
	}
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish delivery event: %w", err)
	}
	return nil
}

// publishChunk bounds the asynchronous publishes in flight.
const publishChunk = 1000

// publishAll publishes msgs asynchronously, in chunks, and waits for every
// stream ack.
func (s *Service) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	for len(msgs) > 0 {
		chunk := msgs[:min(len(msgs), publishChunk)]
		msgs = msgs[len(chunk):]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for _, m := range chunk {
			f, err := s.js.PublishMsgAsync(m)
			if err != nil {
				return fmt.Errorf("publish %s: %w", m.Subject, err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

func (s *Service) deadLetter(ctx context.Context, msg jetstream.Msg, attempt int, reason string) {
	log := s.log.With("subject", msg.Subject())
	err := events.PublishDeadLetter(ctx, s.js, events.DeadLetter{
		Stage: Stage, Source: "alerts", Topic: msg.Subject(), Reason: reason, Payload: msg.Data(),
	})
	if err != nil {
		log.Warn("dead-lettering a bad alert", "err", err)
		s.nak(msg, attempt, 0, log)
		return
	}
	log.Warn("bad alert dead-lettered", "reason", reason)
	s.metrics.alert(ctx, "deadletter")
	s.ack(ctx, msg, log)
}

func (s *Service) ack(ctx context.Context, msg jetstream.Msg, log *slog.Logger) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		// Redelivered later; the KV record makes that harmless.
		log.Warn("acking the alert", "err", err)
	}
}

// nak naks msg for redelivery after the backoff for attempt, or after
// retryAfter when that is longer.
func (s *Service) nak(msg jetstream.Msg, attempt int, retryAfter time.Duration, log *slog.Logger) {
	if err := msg.NakWithDelay(s.retryDelay(attempt, retryAfter)); err != nil {
		log.Warn("nak the alert", "err", err)
	}
}

// retryDelay is the backoff for attempt (initial × 2^(attempt-1), capped,
// with equal jitter), raised to retryAfter plus up to 10 % + 1 s jitter.
func (s *Service) retryDelay(attempt int, retryAfter time.Duration) time.Duration {
	d := s.cfg.Backoff.Initial
	for i := 1; i < attempt && d < s.cfg.Backoff.Max; i++ {
		d *= 2
	}
	d = min(d, s.cfg.Backoff.Max)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > 0 {
		d = max(d, retryAfter+rand.N(retryAfter/10+time.Second))
	}
	return d
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
