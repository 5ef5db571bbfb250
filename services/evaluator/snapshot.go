package evaluator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Snapshots (one evaluator owning every partition). Every
// Config.SnapshotInterval, and at a clean shutdown, the processing
// goroutine takes a snapshot between batches: the tracker's state
// (tracker.MarshalSnapshot), the PRESENCE sequence it covers (the durable
// consumer's ack floor: every message up to it applied and acked; the state
// may include later ones, which a restart then applies twice, a no-op) and
// the ALERTS sequence (every alert the state decided is published by then,
// since publishing finishes before the next batch). A background goroutine
// writes it to the object store bucket Config.SnapshotBucket under key
// "all"; at shutdown it is written before Run returns. A snapshot is not
// taken while a decision is unpublished (publishing gave up because the
// service is stopping): the previous one stays, and the restart's longer
// tail decides again.
//
// At start-up (rebuild), the snapshot is loaded into the fresh tracker and
// only the PRESENCE messages after its sequence are replayed; the ids of
// the alerts published after its ALERTS sequence tell which outages were
// announced meanwhile. A snapshot that does not decode, was written for
// other routes or topology keys, another partition count, or streams that
// were since re-created, is logged and ignored: full replay.

// snapshotKey is the object of the evaluator's state (every partition).
const snapshotKey = snapshotstore.KeyAll

// snapshotTimeout bounds taking (ack floor) and writing one snapshot.
const snapshotTimeout = 30 * time.Second

// snapshots is the service's snapshot state.
type snapshots struct {
	store *snapshotstore.Store
	// mu serialises writes; written is the generation of the last one, so
	// that an older snapshot never replaces a newer one.
	mu      sync.Mutex
	written uint64
	// pending hands the newest snapshot to the writer (capacity 1).
	pending chan takenSnapshot

	// Owned by the processing goroutine: the last generation taken, the
	// newest ALERTS sequence published, whether a decision could not be
	// published, and the streams' identities.
	gen             uint64
	alertsSeq       uint64
	unpublished     bool
	presenceCreated time.Time
	alertsCreated   time.Time
}

// takenSnapshot is a snapshot waiting to be written.
type takenSnapshot struct {
	gen  uint64
	snap snapshotstore.Snapshot
	took time.Duration // marshalling it
}

// streamCreated returns the creation time of a stream.
func streamCreated(ctx context.Context, js jetstream.JetStream, stream string) (time.Time, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return time.Time{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("stream %s info: %w", stream, err)
	}
	return info.Created, nil
}

// loadSnapshot restores the stored snapshot into tr (a new tracker) and
// returns it, or nil when there is none or it cannot be used (logged; tr
// stays empty).
func (s *Service) loadSnapshot(ctx context.Context, tr *tracker.Tracker) (*snapshotstore.Snapshot, error) {
	var err error
	if s.snap.presenceCreated, err = streamCreated(ctx, s.js, events.StreamPresence); err != nil {
		return nil, err
	}
	if s.snap.alertsCreated, err = streamCreated(ctx, s.js, events.StreamAlerts); err != nil {
		return nil, err
	}
	started := time.Now()
	snap, size, ok, err := s.snap.store.Get(ctx, snapshotKey)
	switch {
	case errors.Is(err, snapshotstore.ErrCorrupt):
		s.log.Warn("ignore the stored snapshot: full replay", "reason", err, "bytes", size)
		return nil, nil
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.Warn("read the stored snapshot: full replay", "err", err)
		return nil, nil
	case !ok:
		s.log.Info("no stored snapshot: full replay")
		return nil, nil
	}
	var reason string
	switch {
	case snap.Partitions != s.cfg.Partitions:
		reason = fmt.Sprintf("written for %d partitions, the config says %d", snap.Partitions, s.cfg.Partitions)
	case !snap.PresenceCreated.Equal(s.snap.presenceCreated) || !snap.AlertsCreated.Equal(s.snap.alertsCreated):
		reason = "written for streams that were deleted and created again since"
	}
	if reason == "" {
		if err := tr.RestoreSnapshot(snap.Tracker); err != nil {
			reason = err.Error()
		}
	}
	if reason != "" {
		s.log.Warn("ignore the stored snapshot: full replay", "reason", reason, "bytes", size)
		return nil, nil
	}
	took := time.Since(started)
	s.metrics.snapshotSeconds.Record(ctx, took.Seconds(), phaseRestore)
	s.log.Info("snapshot restored", "bytes", size, "presence_seq", snap.PresenceSeq, "alerts_seq", snap.AlertsSeq,
		"devices", tr.Len(), "took", took.Round(time.Millisecond))
	return &snap, nil
}

// takeSnapshot captures the tracker's state and the positions it covers.
// It runs on the processing goroutine.
func (s *Service) takeSnapshot(ctx context.Context, cons jetstream.Consumer, tr *tracker.Tracker) (takenSnapshot, error) {
	if s.snap.unpublished {
		return takenSnapshot{}, errors.New("decisions were not published")
	}
	started := time.Now()
	tctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	// The acks were sent without waiting: make sure the server has them,
	// so that the ack floor is as high as it can be.
	if err := s.js.Conn().FlushWithContext(tctx); err != nil {
		return takenSnapshot{}, fmt.Errorf("flush acks: %w", err)
	}
	info, err := cons.Info(tctx)
	if err != nil {
		return takenSnapshot{}, fmt.Errorf("consumer info: %w", err)
	}
	data, err := tr.MarshalSnapshot()
	if err != nil {
		return takenSnapshot{}, err
	}
	s.snap.gen++
	return takenSnapshot{gen: s.snap.gen, took: time.Since(started), snap: snapshotstore.Snapshot{
		PresenceSeq: info.AckFloor.Stream, AlertsSeq: s.snap.alertsSeq, PresenceCreated: s.snap.presenceCreated,
		AlertsCreated: s.snap.alertsCreated, Partitions: s.cfg.Partitions, Tracker: data,
	}}, nil
}

// snapshotLater takes a snapshot and hands it to the writer, replacing one
// that is still waiting.
func (s *Service) snapshotLater(ctx context.Context, cons jetstream.Consumer, tr *tracker.Tracker) {
	ts, err := s.takeSnapshot(ctx, cons, tr)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("take a snapshot, will retry at the next interval", "err", err)
			s.metrics.snapshots.Add(ctx, 1, outcomeFailed)
		}
		return
	}
	for {
		select {
		case s.snap.pending <- ts:
			return
		default:
		}
		select {
		case <-s.snap.pending: // an older one still waiting: replaced
		default:
		}
	}
}

// startSnapshotWriter writes the snapshots snapshotLater hands over, until
// ctx ends.
func (s *Service) startSnapshotWriter(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case ts := <-s.snap.pending:
				_ = s.writeSnapshot(ctx, ts)
			case <-ctx.Done():
				return
			}
		}
	}()
}

// writeSnapshot stores a snapshot unless a newer one was stored already.
func (s *Service) writeSnapshot(ctx context.Context, ts takenSnapshot) error {
	s.snap.mu.Lock()
	defer s.snap.mu.Unlock()
	if ts.gen <= s.snap.written {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	started := time.Now()
	size, err := s.snap.store.Put(wctx, snapshotKey, ts.snap)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("write a snapshot, will retry at the next interval", "err", err)
		}
		s.metrics.snapshots.Add(ctx, 1, outcomeFailed)
		return err
	}
	s.snap.written = ts.gen
	put := time.Since(started)
	s.metrics.snapshots.Add(ctx, 1, outcomeWritten)
	s.metrics.snapshotSeconds.Record(ctx, ts.took.Seconds(), phaseTake)
	s.metrics.snapshotSeconds.Record(ctx, put.Seconds(), phasePut)
	s.snapBytes.Store(int64(size))
	s.log.Debug("snapshot written", "bytes", size, "presence_seq", ts.snap.PresenceSeq, "alerts_seq", ts.snap.AlertsSeq,
		"take", ts.took.Round(time.Millisecond), "put", put.Round(time.Millisecond))
	return nil
}

// finalSnapshot takes and writes a snapshot at a clean shutdown (ctx has
// ended: the work gets its own deadline).
func (s *Service) finalSnapshot(ctx context.Context, cons jetstream.Consumer, tr *tracker.Tracker) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotTimeout)
	defer cancel()
	ts, err := s.takeSnapshot(fctx, cons, tr)
	if err == nil {
		err = s.writeSnapshot(fctx, ts)
	}
	if err != nil {
		s.log.Warn("no snapshot at shutdown: the next start replays from the previous one", "err", err)
		return
	}
	s.log.Info("snapshot written at shutdown", "bytes", s.snapBytes.Load(), "presence_seq", ts.snap.PresenceSeq,
		"alerts_seq", ts.snap.AlertsSeq, "devices", tr.Len())
}

// Snapshot phases and outcomes (metrics).
var (
	phaseTake      = metric.WithAttributes(attribute.String("phase", "take"))
	phasePut       = metric.WithAttributes(attribute.String("phase", "put"))
	phaseRestore   = metric.WithAttributes(attribute.String("phase", "restore"))
	outcomeWritten = metric.WithAttributes(attribute.String("outcome", "written"))
	outcomeFailed  = metric.WithAttributes(attribute.String("outcome", "failed"))
)
