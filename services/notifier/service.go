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
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/ratelimit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Stage is the stage name used in dead letters and telemetry.
const Stage = "notifier"

// maxInlineWait is the longest local rate-limit wait spent in the worker;
// longer waits nak the alert with a delay instead.
const maxInlineWait = 2 * time.Second

// Notifier sends one alert to one receiver and classifies the outcome.
// The channel packages implement it.
type Notifier interface {
	Notify(ctx context.Context, a events.AlertEvent) (notify.Result, error)
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
	// Now is the clock (default time.Now); it also times the signatures.
	Now func() time.Time
}

// NewNotifier builds the channel notifier of one receiver, reading its
// URL and secret. It is what a "send a test message" command needs.
func NewNotifier(r Receiver, client *http.Client, now func() time.Time) (Notifier, error) {
	if err := r.validate("receiver"); err != nil {
		return nil, err
	}
	switch r.Channel {
	case ChannelDingTalk:
		n, err := dingtalk.New(*r.DingTalk, client, now)
		if err != nil {
			return nil, fmt.Errorf("receiver %q: %w", r.Name, err)
		}
		return n, nil
	default:
		n, err := feishu.New(*r.Feishu, client, now)
		if err != nil {
			return nil, fmt.Errorf("receiver %q: %w", r.Name, err)
		}
		return n, nil
	}
}

var (
	_ Notifier = (*dingtalk.Notifier)(nil)
	_ Notifier = (*feishu.Notifier)(nil)
)

// receiver is a configured receiver with its pacing state.
type receiver struct {
	name     string
	notifier Notifier
	limiter  *ratelimit.Limiter

	mu          sync.Mutex
	pausedUntil time.Time
	pauseReason string
}

// hold reports how long to wait before sending to r (0: send now, and the
// send is counted by the local limit).
func (r *receiver) hold(now time.Time) (time.Duration, string) {
	r.mu.Lock()
	until, why := r.pausedUntil, r.pauseReason
	r.mu.Unlock()
	if now.Before(until) {
		return until.Sub(now), why
	}
	if w := r.limiter.Reserve(now); w > 0 {
		return w, fmt.Sprintf("held back by the local rate limit %v, which keeps this receiver under the remote limit", r.limiter.Windows())
	}
	return 0, ""
}

// pause stops sends to r until until (a remote rate limit or block).
func (r *receiver) pause(until time.Time, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until.After(r.pausedUntil) {
		r.pausedUntil, r.pauseReason = until, why
	}
}

// Service is the running notifier stage.
type Service struct {
	cfg       Config
	nc        *nats.Conn
	js        jetstream.JetStream
	log       *slog.Logger
	tracer    trace.Tracer
	now       func() time.Time
	receivers map[string]*receiver
	metrics   metrics

	kv    atomic.Pointer[jetstream.KeyValue]
	ready atomic.Bool
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
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: cfg.RequestTimeout}
	}
	s := &Service{
		cfg:       cfg,
		nc:        deps.NATS,
		js:        js,
		log:       deps.Logger,
		tracer:    deps.TracerProvider.Tracer("github.com/fleetwatch/fleetwatch/services/notifier"),
		now:       deps.Now,
		receivers: map[string]*receiver{},
	}
	if s.metrics, err = newMetrics(deps.MeterProvider); err != nil {
		return nil, err
	}
	for _, r := range cfg.Receivers {
		n, err := NewNotifier(r, deps.HTTPClient, deps.Now)
		if err != nil {
			return nil, err
		}
		windows := r.RateLimit
		if len(windows) == 0 {
			windows = cfg.RateLimits.DingTalk
			if r.Channel == ChannelFeishu {
				windows = cfg.RateLimits.Feishu
			}
		}
		lim, err := ratelimit.New(windows...)
		if err != nil {
			return nil, fmt.Errorf("receiver %q rate limit: %w", r.Name, err)
		}
		s.receivers[r.Name] = &receiver{name: r.Name, notifier: n, limiter: lim}
	}
	return s, nil
}

// Ready returns nil while the service is consuming alerts.
func (s *Service) Ready() error {
	if !s.ready.Load() {
		return errors.New("notifier is not consuming alerts")
	}
	return nil
}

// Run creates the KV bucket and the durable consumer, then delivers alerts
// until ctx ends. In-flight deliveries finish (bounded by the request
// timeout); alerts not yet started are nak'ed for immediate redelivery.
func (s *Service) Run(ctx context.Context) error {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      s.cfg.Idempotency.Bucket,
		Description: "fleetwatch notifier: final delivery outcome per alert id",
		History:     1,
		TTL:         s.cfg.Idempotency.TTL,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Idempotency.Replicas,
	})
	if err != nil {
		return fmt.Errorf("notifier: create or update kv bucket %s: %w", s.cfg.Idempotency.Bucket, err)
	}
	s.kv.Store(&kv)
	cons, err := events.EnsureConsumer(ctx, s.js, events.StreamAlerts,
		events.ConsumerConfig(events.ConsumerNotifier, events.AlertsPrefix+".>", s.cfg.AckWait, s.cfg.MaxAckPending))
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}

	// Deliveries finish on their own context so a shutdown does not cut a
	// request in half; it is cancelled if they overrun the grace period.
	procCtx, cancelProc := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProc()
	var stopping atomic.Bool
	queues := make([]chan jetstream.Msg, s.cfg.Workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan jetstream.Msg, 1)
		q := queues[i]
		wg.Go(func() {
			for m := range q {
				if stopping.Load() {
					_ = m.Nak()
					continue
				}
				s.handle(procCtx, m)
			}
		})
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		// One receiver's alerts go to one worker, in stream order.
		h := fnv.New32a()
		_, _ = h.Write([]byte(m.Subject()))
		select {
		case queues[h.Sum32()%uint32(len(queues))] <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	},
		jetstream.PullMaxMessages(2*s.cfg.Workers),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.log.Warn("consuming alerts", "err", err)
		}))
	if err != nil {
		for _, q := range queues {
			close(q)
		}
		wg.Wait()
		return fmt.Errorf("notifier: consume alerts: %w", err)
	}
	s.ready.Store(true)
	s.log.Info("delivering alerts", "receivers", len(s.receivers), "workers", s.cfg.Workers)

	<-ctx.Done()
	s.ready.Store(false)
	stopping.Store(true)
	cc.Stop()
	<-cc.Closed()
	for _, q := range queues {
		close(q)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2*s.cfg.RequestTimeout + 5*time.Second):
		cancelProc()
		<-done
	}
	return nil
}

// handle processes one alert message and acks or naks it.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := s.tracer.Start(ctx, "notifier.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.destination.name", msg.Subject())))
	defer span.End()
	// The message may have waited in the client buffer: restart its ack
	// timer so JetStream does not redeliver it while it is being sent.
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

	if a.Silenced {
		s.metrics.alert(ctx, "silenced")
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
			s.retry(msg, attempt, 0, log)
			return
		}
		s.metrics.alert(ctx, "unknown_receiver")
		s.ack(ctx, msg, log)
		return
	}

	s.deliver(ctx, msg, a, rcv, attempt, log)
}

// deliver sends a to rcv unless it was delivered before, records the
// attempt, and acks (final outcome) or naks (retry) msg.
func (s *Service) deliver(ctx context.Context, msg jetstream.Msg, a events.AlertEvent, rcv *receiver, attempt int, log *slog.Logger) {
	span := trace.SpanFromContext(ctx)
	kv := *s.kv.Load()
	key := kvKey(a.ID)
	if _, err := kv.Get(ctx, key); err == nil {
		log.Debug("already delivered: not sending again")
		s.metrics.alert(ctx, "duplicate")
		s.ack(ctx, msg, log)
		return
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		log.Warn("reading the delivery record", "err", err)
		s.retry(msg, attempt, 0, log)
		return
	}

	// Pace: short local waits are spent here, long ones (and a remote
	// block) go back to JetStream as a delayed redelivery.
	channel := rcv.notifier.Channel()
	wait, why := rcv.hold(s.now())
	for slept := time.Duration(0); wait > 0 && wait <= maxInlineWait && slept < 2*maxInlineWait; {
		if !sleep(ctx, wait) {
			s.retry(msg, attempt, 0, log)
			return
		}
		slept += wait
		wait, why = rcv.hold(s.now())
	}
	if wait > 0 {
		res := notify.Result{Outcome: events.OutcomeRateLimited, RetryAfter: wait, RemoteMessage: "not sent", Hint: why}
		if err := s.publishDelivery(ctx, a, channel, attempt, res); err != nil {
			log.Warn("recording the delivery", "err", err)
		}
		s.metrics.delivery(ctx, rcv.name, channel, res)
		log.Info("holding the alert", "wait", wait.Round(time.Millisecond), "why", why)
		s.retry(msg, attempt, wait, log)
		return
	}

	sendCtx, cancel := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout+time.Second)
	res, err := rcv.notifier.Notify(sendCtx, a)
	cancel()
	if res.Outcome == events.OutcomeRateLimited && res.RetryAfter > 0 {
		rcv.pause(s.now().Add(res.RetryAfter), res.Hint)
	}
	if res.Outcome == events.OutcomeRetryable && s.cfg.MaxAttempts > 0 && attempt >= s.cfg.MaxAttempts {
		res.Outcome = events.OutcomePermanent
		res.Hint = fmt.Sprintf("gave up after %d attempts; last failure: %s", attempt, res.Hint)
	}
	s.metrics.delivery(ctx, rcv.name, channel, res)
	span.SetAttributes(attribute.String("fleetwatch.outcome", string(res.Outcome)), attribute.String("fleetwatch.channel", channel))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	if perr := s.publishDelivery(ctx, a, channel, attempt, res); perr != nil {
		log.Warn("recording the delivery", "err", perr)
		s.retry(msg, attempt, 0, log)
		return
	}
	switch res.Outcome {
	case events.OutcomeDelivered:
		log.Info("delivered", "channel", channel, "latency", res.Latency.Round(time.Millisecond), "bytes", res.Bytes)
	case events.OutcomePermanent:
		log.Error("delivery failed permanently", "channel", channel, "code", res.RemoteCode, "msg", res.RemoteMessage, "hint", res.Hint)
	default:
		log.Warn("delivery failed; will retry", "channel", channel, "outcome", res.Outcome, "http", res.HTTPStatus,
			"code", res.RemoteCode, "msg", res.RemoteMessage, "hint", res.Hint)
		s.retry(msg, attempt, res.RetryAfter, log)
		return
	}
	// Final: remember the outcome before acking, so a redelivery or a
	// replay of this alert id is acked without sending.
	rec, _ := json.Marshal(record{AlertID: a.ID, Receiver: a.Receiver, Channel: channel, Outcome: res.Outcome,
		Attempt: attempt, RemoteCode: res.RemoteCode, AtMS: s.now().UnixMilli()})
	if _, err := kv.Put(ctx, key, rec); err != nil {
		log.Warn("recording the final outcome", "err", err)
		s.retry(msg, attempt, 0, log)
		return
	}
	s.metrics.alert(ctx, string(res.Outcome))
	s.ack(ctx, msg, log)
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

func (s *Service) publishDelivery(ctx context.Context, a events.AlertEvent, channel string, attempt int, res notify.Result) error {
	d, err := events.NewDeliveryEvent(events.DeliveryEvent{
		AlertID: a.ID, Fingerprint: a.Fingerprint, AlertStatus: a.Status, Receiver: a.Receiver, Channel: channel,
		Attempt: attempt, Outcome: res.Outcome, HTTPStatus: res.HTTPStatus, RemoteCode: res.RemoteCode,
		RemoteMessage: res.RemoteMessage, Hint: res.Hint, Bytes: res.Bytes, LatencyMS: res.Latency.Milliseconds(),
		AtMS: s.now().UnixMilli(),
	})
	if err != nil {
		return fmt.Errorf("delivery event: %w", err)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode delivery event: %w", err)
	}
	m := nats.NewMsg(d.Subject())
	m.Data = data
	m.Header.Set(events.HeaderMsgID, d.ID)
	telemetry.Inject(ctx, m)
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish delivery event: %w", err)
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
		s.retry(msg, attempt, 0, log)
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

// retry naks msg for redelivery after the backoff for attempt, or after
// retryAfter when that is longer.
func (s *Service) retry(msg jetstream.Msg, attempt int, retryAfter time.Duration, log *slog.Logger) {
	d := s.retryDelay(attempt, retryAfter)
	if err := msg.NakWithDelay(d); err != nil {
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
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
