package evaluator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
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
// With lease partitions, unit l of L > 1 is stored under "l<l>of<L>", with
// the lease's epoch (snapshotstore fences older epochs); with L = 1 under
// snapshotKey too.
const snapshotKey = snapshotstore.KeyAll

// snapshotTimeout bounds writing one snapshot.
const snapshotTimeout = 30 * time.Second

// snapshotInfoTimeout bounds reading the ack floor for a snapshot. It runs
// on the processing goroutine, which applies nothing meanwhile: a request
// lost to a NATS node that stops must not stall processing for long. A
// snapshot that fails is taken again at the next interval.
const snapshotInfoTimeout = 3 * time.Second

// snapshots is the service's snapshot state.
type snapshots struct {
	store *snapshotstore.Store
	// mu serialises writes; written is the generation of the last one per
	// key, so that an older snapshot never replaces a newer one.
	mu      sync.Mutex
	written map[string]uint64
	// pending holds the newest snapshot of each key for the writer;
	// signal wakes it (capacity 1).
	pendingMu sync.Mutex
	pending   map[string]takenSnapshot
	signal    chan struct{}

	// Owned by the processing goroutine: the last generation taken and the
	// streams' identities.
	gen             uint64
	presenceCreated time.Time
	alertsCreated   time.Time
}

// takenSnapshot is a snapshot waiting to be written.
type takenSnapshot struct {
	u    *unit
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

// loadSnapshot restores the unit's stored snapshot into its tracker (a new
// one) and returns it, or nil when there is none or it cannot be used
// (logged; the tracker stays empty).
func (s *Service) loadSnapshot(ctx context.Context, u *unit) (*snapshotstore.Snapshot, error) {
	var err error
	if s.snap.presenceCreated, err = streamCreated(ctx, s.js, events.StreamPresence); err != nil {
		return nil, err
	}
	if s.snap.alertsCreated, err = streamCreated(ctx, s.js, events.StreamAlerts); err != nil {
		return nil, err
	}
	log := s.log.With("unit", u.name)
	started := time.Now()
	snap, size, ok, err := s.snap.store.Get(ctx, u.name)
	switch {
	case errors.Is(err, snapshotstore.ErrCorrupt):
		log.Warn("ignore the stored snapshot: full replay", "reason", err, "bytes", size)
		return nil, nil
	case err != nil:
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("read the stored snapshot: full replay", "err", err)
		return nil, nil
	case !ok:
		log.Info("no stored snapshot: full replay")
		return nil, nil
	}
	var reason string
	switch {
	case snap.Partitions != s.cfg.Partitions:
		reason = fmt.Sprintf("written for %d partitions, the config says %d", snap.Partitions, s.cfg.Partitions)
	case !snap.PresenceCreated.Equal(s.snap.presenceCreated) || !snap.AlertsCreated.Equal(s.snap.alertsCreated):
		reason = "written for streams that were deleted and created again since"
	case u.epoch > 0 && snap.Epoch > u.epoch:
		// Not expected: the lease was claimed after that write.
		return nil, fmt.Errorf("snapshot %s was written with lease epoch %d, newer than ours (%d)", u.name, snap.Epoch, u.epoch)
	}
	if reason == "" {
		if err := u.tr.RestoreSnapshot(snap.Tracker); err != nil {
			reason = err.Error()
		}
	}
	if reason != "" {
		log.Warn("ignore the stored snapshot: full replay", "reason", reason, "bytes", size)
		return nil, nil
	}
	took := time.Since(started)
	s.metrics.snapshotSeconds.Record(ctx, took.Seconds(), phaseRestore)
	log.Info("snapshot restored", "bytes", size, "presence_seq", snap.PresenceSeq, "alerts_seq", snap.AlertsSeq,
		"epoch", snap.Epoch, "devices", u.tr.Len(), "took", took.Round(time.Millisecond))
	return &snap, nil
}

// takeSnapshot captures a unit's state and the positions it covers. It
// runs on the processing goroutine.
func (s *Service) takeSnapshot(ctx context.Context, u *unit) (takenSnapshot, error) {
	if u.unpublished {
		return takenSnapshot{}, errors.New("decisions were not published")
	}
	started := time.Now()
	tctx, cancel := context.WithTimeout(ctx, snapshotInfoTimeout)
	defer cancel()
	// The acks were sent without waiting: make sure the server has them,
	// so that the ack floor is as high as it can be.
	if err := s.js.Conn().FlushWithContext(tctx); err != nil {
		return takenSnapshot{}, fmt.Errorf("flush acks: %w", err)
	}
	info, err := u.cons.Info(tctx)
	if err != nil {
		return takenSnapshot{}, fmt.Errorf("consumer info: %w", err)
	}
	data, err := u.tr.MarshalSnapshot()
	if err != nil {
		return takenSnapshot{}, err
	}
	s.snap.gen++
	return takenSnapshot{u: u, gen: s.snap.gen, took: time.Since(started), snap: snapshotstore.Snapshot{
		PresenceSeq: info.AckFloor.Stream, AlertsSeq: u.alertsSeq, PresenceCreated: s.snap.presenceCreated,
		AlertsCreated: s.snap.alertsCreated, Partitions: s.cfg.Partitions, Tracker: data, Epoch: u.epoch,
	}}, nil
}

// snapshotLater takes a snapshot of a unit and hands it to the writer,
// replacing one of the same unit that is still waiting.
func (s *Service) snapshotLater(u *unit) {
	ts, err := s.takeSnapshot(u.ctx, u)
	if err != nil {
		if u.ctx.Err() == nil {
			s.log.Warn("take a snapshot, will retry at the next interval", "unit", u.name, "err", err)
			s.metrics.snapshots.Add(u.ctx, 1, outcomeFailed)
		}
		return
	}
	s.snap.pendingMu.Lock()
	s.snap.pending[u.name] = ts
	s.snap.pendingMu.Unlock()
	select {
	case s.snap.signal <- struct{}{}:
	default:
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
			case <-s.snap.signal:
				s.snap.pendingMu.Lock()
				todo := s.snap.pending
				s.snap.pending = map[string]takenSnapshot{}
				s.snap.pendingMu.Unlock()
				for _, ts := range todo {
					if ts.u.ctx.Err() == nil { // a unit no longer owned writes nothing
						_ = s.writeSnapshot(ts.u.ctx, ts)
					}
				}
			case <-ctx.Done():
				return
			}
		}
	}()
}

// writeSnapshot stores a snapshot unless a newer one of its unit was
// stored already.
func (s *Service) writeSnapshot(ctx context.Context, ts takenSnapshot) error {
	s.snap.mu.Lock()
	defer s.snap.mu.Unlock()
	key := ts.u.name
	if ts.gen <= s.snap.written[key] {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	started := time.Now()
	size, err := s.snap.store.Put(wctx, key, ts.snap)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("write a snapshot, will retry at the next interval", "unit", key, "err", err)
		}
		s.metrics.snapshots.Add(ctx, 1, outcomeFailed)
		return err
	}
	s.snap.written[key] = ts.gen
	put := time.Since(started)
	s.metrics.snapshots.Add(ctx, 1, outcomeWritten)
	s.metrics.snapshotSeconds.Record(ctx, ts.took.Seconds(), phaseTake)
	s.metrics.snapshotSeconds.Record(ctx, put.Seconds(), phasePut)
	s.snapBytes.Store(int64(size))
	s.stats.set(key, func(st *unitStat) { st.snapBytes, st.snapWritten = int64(size), time.Now() })
	s.log.Debug("snapshot written", "unit", key, "bytes", size, "presence_seq", ts.snap.PresenceSeq, "alerts_seq", ts.snap.AlertsSeq,
		"epoch", ts.snap.Epoch, "take", ts.took.Round(time.Millisecond), "put", put.Round(time.Millisecond))
	return nil
}

// finalSnapshot takes and writes a snapshot of a unit that stopped
// processing (at a clean shutdown, or a lease handed over). ctx bounds
// the work (with snapshotTimeout).
func (s *Service) finalSnapshot(ctx context.Context, u *unit) error {
	fctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	ts, err := s.takeSnapshot(fctx, u)
	if err == nil {
		err = s.writeSnapshot(fctx, ts)
	}
	if err != nil {
		s.log.Warn("no final snapshot: the next owner replays from the previous one", "unit", u.name, "err", err)
		return err
	}
	s.log.Info("snapshot written", "unit", u.name, "bytes", s.snapBytes.Load(), "presence_seq", ts.snap.PresenceSeq,
		"alerts_seq", ts.snap.AlertsSeq, "epoch", u.epoch, "devices", u.tr.Len())
	return nil
}

// Snapshot phases and outcomes (metrics).
var (
	phaseTake      = metric.WithAttributes(attribute.String("phase", "take"))
	phasePut       = metric.WithAttributes(attribute.String("phase", "put"))
	phaseRestore   = metric.WithAttributes(attribute.String("phase", "restore"))
	outcomeWritten = metric.WithAttributes(attribute.String("outcome", "written"))
	outcomeFailed  = metric.WithAttributes(attribute.String("outcome", "failed"))
)
