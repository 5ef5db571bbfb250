package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/escalate"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of an escalation copy in ALERTS: the receiver whose alert stayed
// unresolved, and the chain step's delay (a Go duration, e.g. 30m0s).
const (
	HeaderEscalatedFrom  = "Fleetwatch-Escalated-From"
	HeaderEscalatedAfter = "Fleetwatch-Escalated-After"
)

// errContended means a record's compare-and-set lost too many races.
var errContended = errors.New("notifier: too many concurrent updates of one escalation record")

// escalator runs the receivers' escalation chains. Each alert episode
// sent to a receiver with a chain has a record in a KV bucket (see package
// escalate), changed only by compare-and-set. Every replica watches the
// bucket, knows when each record is due, and advances due records: it
// publishes the copy to ALERTS (its id is the Nats-Msg-Id, so two replicas
// racing store it once) and then records it. A copy is an ordinary alert
// for its receiver: held, digested, rate-limited, deduplicated and
// recorded like any other.
type escalator struct {
	kv         jetstream.KeyValue
	js         jetstream.JetStream
	chains     map[string][]escalate.Step
	now        func() time.Time
	sleepUntil func(ctx context.Context, t time.Time) bool
	log        *slog.Logger
	metrics    metrics
	check      time.Duration

	mu   sync.Mutex
	due  map[string]dueEntry // records that need work, by key
	wake chan struct{}
}

type dueEntry struct {
	at  time.Time
	rev uint64
}

func newEscalator(kv jetstream.KeyValue, js jetstream.JetStream, chains map[string][]escalate.Step, s *Service) *escalator {
	return &escalator{kv: kv, js: js, chains: chains, now: s.now, sleepUntil: s.sleepUntil, log: s.log.With("part", "escalation"),
		metrics: s.metrics, check: s.cfg.Escalation.Check, due: map[string]dueEntry{}, wake: make(chan struct{}, 1)}
}

// chained reports whether a starts or ends an episode of a chain: its
// receiver has one, it is the evaluator's first tier (a higher tier is
// the evaluator's own escalation) and it is not itself a copy.
func (e *escalator) chained(a events.AlertEvent, copied bool) bool {
	return e != nil && !copied && a.Tier == 0 && len(e.chains[a.Receiver]) > 0
}

func (e *escalator) get(ctx context.Context, key string) (*escalate.Record, uint64, error) {
	entry, err := e.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read escalation %s: %w", key, err)
	}
	var r escalate.Record
	if err := json.Unmarshal(entry.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("decode escalation %s: %w", key, err)
	}
	return &r, entry.Revision(), nil
}

// put writes r if key is still at rev (0: absent); false when another
// replica changed it first.
func (e *escalator) put(ctx context.Context, key string, r escalate.Record, rev uint64) (uint64, bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return 0, false, fmt.Errorf("encode escalation: %w", err)
	}
	var n uint64
	if rev == 0 {
		n, err = e.kv.Create(ctx, key, data)
	} else {
		n, err = e.kv.Update(ctx, key, data, rev)
	}
	switch {
	case err == nil:
		e.note(key, r, n)
		return n, true, nil
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("write escalation %s: %w", key, err)
}

// observe applies a notification of a chained receiver to its episode's
// record before the notification is acked: a firing one starts the chain
// (or updates the alert copies are made of, or pauses it when silenced),
// a resolved one ends it and sends the resolved copies.
func (e *escalator) observe(ctx context.Context, a events.AlertEvent) error {
	key := escalate.KeyOf(a)
	for range 10 {
		rec, rev, err := e.get(ctx, key)
		if err != nil {
			return err
		}
		next, changed := escalate.Observe(rec, a)
		if !changed {
			return nil
		}
		_, ok, err := e.put(ctx, key, next, rev)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if next.Finishing() {
			// Now rather than at the next check; on failure the watcher
			// finds the record unfinished and tries again.
			if err := e.advance(ctx, key); err != nil {
				e.log.Warn("sending the resolved escalation copies; will retry", "key", key, "err", err)
			}
		}
		return nil
	}
	return errContended
}

// publish stores a copy in ALERTS for its receiver.
func (e *escalator) publish(ctx context.Context, c escalate.Copy) error {
	data, err := json.Marshal(c.Alert)
	if err != nil {
		return fmt.Errorf("encode escalation copy: %w", err)
	}
	m := nats.NewMsg(c.Alert.Subject())
	m.Data = data
	m.Header.Set(events.HeaderMsgID, c.Alert.ID)
	m.Header.Set(HeaderEscalatedFrom, c.From)
	m.Header.Set(HeaderEscalatedAfter, c.After.String())
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish escalation copy for %s: %w", c.Alert.Receiver, err)
	}
	e.metrics.escalation(ctx, c.Alert.Receiver, c.Alert.Status)
	e.log.Info("escalated", "from", c.From, "to", c.Alert.Receiver, "status", c.Alert.Status, "after", c.After,
		"fingerprint", c.Alert.Fingerprint, "alert_id", c.Alert.ID)
	return nil
}

// advance does what the record at key owes: a resolved record sends the
// resolved copy to every receiver that got a firing one; a due step sends
// its firing copy. A copy is published before it is recorded, so a crash
// in between sends it again under the same id (stored once); a record
// changed meanwhile by another replica or a new notification is re-read.
func (e *escalator) advance(ctx context.Context, key string) error {
	published := -1 // the step whose firing copy this call published, not yet recorded
	var step escalate.Step
	for range 10 {
		rec, rev, err := e.get(ctx, key)
		if err != nil {
			return err
		}
		if rec == nil {
			e.forget(key)
			return nil
		}
		r := *rec
		if published >= len(r.Sent) {
			// Record what was published, whatever changed meanwhile.
			if r.Done {
				// The resolved copies went out without this step's.
				if err := e.publish(ctx, r.ResolvedCopy(escalate.Sent{Receiver: step.Receiver, AfterMS: step.After.Milliseconds()})); err != nil {
					return err
				}
			}
			r.Sent = append(append([]escalate.Sent(nil), r.Sent...), escalate.Sent{Receiver: step.Receiver, AfterMS: step.After.Milliseconds()})
			if _, ok, err := e.put(ctx, key, r, rev); err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			published = -1
			continue
		}
		if r.Finishing() {
			for _, c := range r.ResolvedCopies() {
				if err := e.publish(ctx, c); err != nil {
					return err
				}
			}
			r.Done = true
			if _, ok, err := e.put(ctx, key, r, rev); err != nil || ok {
				return err
			}
			continue
		}
		now := e.now()
		s, due, ok := r.Next(e.chains[r.Source])
		if !ok || now.Before(due) {
			e.note(key, r, rev)
			return nil
		}
		if err := e.publish(ctx, r.FiringCopy(s, now.UnixMilli())); err != nil {
			return err
		}
		published, step = len(r.Sent), s
	}
	return errContended
}

// dueAt is when the record needs work; false when it needs none.
func (e *escalator) dueAt(r escalate.Record) (time.Time, bool) {
	if r.Finishing() {
		return time.Time{}, true
	}
	_, due, ok := r.Next(e.chains[r.Source])
	return due, ok
}

// note updates the due time of key from its record at revision rev (an
// older revision than the one known is ignored).
func (e *escalator) note(key string, r escalate.Record, rev uint64) {
	at, ok := e.dueAt(r)
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur, known := e.due[key]; known && cur.rev > rev {
		return
	}
	if !ok {
		delete(e.due, key)
		return
	}
	e.due[key] = dueEntry{at: at, rev: rev}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *escalator) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.due, key)
}

// watch keeps the due times of every record in the bucket, written by any
// replica, until ctx ends.
func (e *escalator) watch(ctx context.Context) error {
	w, err := e.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch escalations: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil {
					continue // the initial values are in
				}
				if entry.Operation() != jetstream.KeyValuePut {
					e.forget(entry.Key())
					continue
				}
				var r escalate.Record
				if err := json.Unmarshal(entry.Value(), &r); err != nil {
					e.log.Warn("an escalation record is not valid JSON: ignored", "key", entry.Key(), "err", err)
					continue
				}
				e.note(entry.Key(), r, entry.Revision())
			}
		}
	}()
	return nil
}

// run advances due records until ctx ends: at each record's due time, and
// at least every check interval to retry failures.
func (e *escalator) run(ctx context.Context) {
	for ctx.Err() == nil {
		now := e.now()
		next := now.Add(e.check)
		var ready []string
		e.mu.Lock()
		for key, d := range e.due {
			if !d.at.After(now) {
				ready = append(ready, key)
			} else if d.at.Before(next) {
				next = d.at
			}
		}
		e.mu.Unlock()
		for _, key := range ready {
			if err := e.advance(ctx, key); err != nil && ctx.Err() == nil {
				e.log.Warn("advancing an escalation; will retry", "key", key, "err", err)
				e.mu.Lock()
				if d, ok := e.due[key]; ok {
					e.due[key] = dueEntry{at: now.Add(e.check), rev: d.rev}
				}
				e.mu.Unlock()
			}
		}
		if len(ready) > 0 {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-e.wake:
				cancel()
			case <-wctx.Done():
			}
		}()
		e.sleepUntil(wctx, next)
		cancel()
	}
}

// escalationNote reads the escalation headers of an ALERTS message: the
// note for the template, and whether the message is a copy.
func escalationNote(h nats.Header) (template.Note, bool) {
	from := h.Get(HeaderEscalatedFrom)
	if from == "" {
		return template.Note{}, false
	}
	after, _ := time.ParseDuration(h.Get(HeaderEscalatedAfter))
	return template.Note{EscalatedFrom: from, EscalatedAfter: after}, true
}
