// Package escalate is the pure core of the notifier's escalation chains:
// "when an alert sent to receiver A is still unresolved after 30 minutes,
// also notify receiver B". It keeps one Record per alert episode (source
// receiver, fingerprint, start) and decides, from the record, the chain
// and the time, what is due: a copy of the latest firing notification for
// the next receiver of the chain, or, once the alert resolved, the
// resolved notification for every receiver that got a firing copy. It
// has no clock and does no I/O; the notifier stores records in a NATS KV
// bucket, changes them by compare-and-set, and publishes the copies to
// ALERTS with their ids as Nats-Msg-Id, so replicas and restarts neither
// lose nor double an escalation.
package escalate

import (
	"strconv"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Step is one link of a chain: after After unresolved (from the alert's
// start), also notify Receiver.
type Step struct {
	After    time.Duration
	Receiver string
}

// Sent records a step whose firing copy was published.
type Sent struct {
	Receiver string `json:"receiver"`
	// AfterMS is the step's delay when it fired.
	AfterMS int64 `json:"after_ms"`
}

// Record is the durable state of one alert episode's chain at its source
// receiver.
type Record struct {
	// Source is the receiver the alert was for.
	Source string `json:"source"`
	// Alert is the latest firing notification to Source (by CreatedAtMS);
	// copies are made from it. Its Silenced or Inhibited flag pauses the
	// chain.
	Alert *events.AlertEvent `json:"alert,omitempty"`
	// Sent lists, in order, the steps whose firing copy was published.
	Sent []Sent `json:"sent,omitempty"`
	// Resolved is the resolved notification to Source, once it came.
	Resolved *events.AlertEvent `json:"resolved,omitempty"`
	// Done is set once the resolved copies of every sent step are
	// published (or there were none): nothing is left to do. Done
	// records are kept as tombstones, so that a late redelivery of a
	// firing notification does not start the chain again.
	Done bool `json:"done,omitempty"`
}

// Key is the KV key of an alert episode's record at source.
func Key(source, fingerprint string, startsAtMS int64) string {
	return "e_" + events.ContentID("escalation.v1", source, fingerprint, strconv.FormatInt(startsAtMS, 10))
}

// KeyOf is the key of a's episode at its receiver.
func KeyOf(a events.AlertEvent) string { return Key(a.Receiver, a.Fingerprint, a.StartsAtMS) }

// Observe applies a notification for the record's source (rec nil: no
// record yet) and returns the new record and whether it changed. A firing
// notification starts the chain or replaces the alert copies are made of
// (a newer one only); a resolved one ends it. A resolved notification
// without a record leaves a Done tombstone, so a firing one redelivered
// after it starts nothing.
func Observe(rec *Record, a events.AlertEvent) (Record, bool) {
	if rec == nil {
		r := Record{Source: a.Receiver}
		if a.Status == events.StatusResolved {
			r.Resolved, r.Done = &a, true
		} else {
			r.Alert = &a
		}
		return r, true
	}
	r := *rec
	switch {
	case r.Resolved != nil:
		// Ended: later notifications (redeliveries) change nothing.
		return r, false
	case a.Status == events.StatusResolved:
		r.Resolved = &a
		r.Done = len(r.Sent) == 0
		return r, true
	case r.Alert == nil || a.CreatedAtMS > r.Alert.CreatedAtMS || a.CreatedAtMS == r.Alert.CreatedAtMS && a.ID != r.Alert.ID:
		r.Alert = &a
		return r, true
	}
	return r, false
}

// Paused reports whether the chain waits: the latest firing notification
// is silenced or folded into another alert.
func (r Record) Paused() bool {
	return r.Alert != nil && (r.Alert.Silenced || r.Alert.Inhibited)
}

// Next returns the next step of chain and when it is due (the alert's
// start plus the step's After); ok is false when nothing more will fire:
// the alert resolved, the chain is exhausted, or it is paused.
func (r Record) Next(chain []Step) (step Step, due time.Time, ok bool) {
	if r.Resolved != nil || r.Alert == nil || r.Paused() || len(r.Sent) >= len(chain) {
		return Step{}, time.Time{}, false
	}
	s := chain[len(r.Sent)]
	return s, time.UnixMilli(r.Alert.StartsAtMS).Add(s.After), true
}

// Finishing reports whether the alert resolved and resolved copies may
// still be owed to the receivers in Sent.
func (r Record) Finishing() bool { return r.Resolved != nil && !r.Done }

// Copy is a notification of the chain, for one receiver of it.
type Copy struct {
	// Alert is the copy, for Receiver, with its own id.
	Alert events.AlertEvent
	// From is the source receiver and After the step's delay.
	From  string
	After time.Duration
}

// CopyID is the id of the copy of a source's notification with the given
// status for target: one per episode, target and status, whatever
// version of the alert it was made from.
func CopyID(target, source, fingerprint string, status events.AlertStatus, startsAtMS int64) string {
	return events.ContentID("alert.v1.escalated", target, source, fingerprint, string(status), strconv.FormatInt(startsAtMS, 10))
}

// FiringCopy is the copy of the latest firing notification for step,
// created at nowMS. It is never silenced (a silenced alert pauses the
// chain instead).
func (r Record) FiringCopy(step Step, nowMS int64) Copy {
	a := *r.Alert
	a.ID = CopyID(step.Receiver, r.Source, a.Fingerprint, a.Status, a.StartsAtMS)
	a.Receiver = step.Receiver
	a.CreatedAtMS = nowMS
	a.Silenced, a.SilenceIDs, a.Inhibited, a.InhibitedBy = false, nil, false, ""
	return Copy{Alert: a, From: r.Source, After: step.After}
}

// ResolvedCopies are the copies of the resolved notification for every
// receiver that got a firing copy.
func (r Record) ResolvedCopies() []Copy {
	if r.Resolved == nil {
		return nil
	}
	out := make([]Copy, 0, len(r.Sent))
	for _, s := range r.Sent {
		out = append(out, r.ResolvedCopy(s))
	}
	return out
}

// ResolvedCopy is the copy of the resolved notification for one sent step.
func (r Record) ResolvedCopy(s Sent) Copy {
	a := *r.Resolved
	a.ID = CopyID(s.Receiver, r.Source, a.Fingerprint, a.Status, a.StartsAtMS)
	a.Receiver = s.Receiver
	a.Silenced, a.SilenceIDs, a.Inhibited, a.InhibitedBy = false, nil, false, ""
	return Copy{Alert: a, From: r.Source, After: time.Duration(s.AfterMS) * time.Millisecond}
}
