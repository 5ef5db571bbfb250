package evaluator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go/jetstream"
)

// unit is one ownership unit: a tracker with the presence partitions it
// covers, its durable consumer and its snapshot. Without leases there is
// one, covering every partition (consumer "evaluator", snapshot "all");
// with L lease partitions, unit l covers the partitions p with
// p mod L = l (with L = 1: the same consumer and snapshot as without
// leases). Everything but ctx, the fetch goroutine and the stats is owned by
// the processing goroutine.
type unit struct {
	l, of    int    // lease partition l of `of`; of = 0: no leases
	name     string // "all" or "l<l>of<L>": snapshot key, logs, metrics
	consumer string
	filters  []string
	scope    string // tracker.Config.IDScope: "" with at most one unit
	epoch    uint64 // the lease's (0 without leases)

	// ctx is the ownership context: processing stops when it ends.
	ctx       context.Context
	cons      jetstream.Consumer
	tr        *tracker.Tracker
	stopFetch context.CancelFunc
	fetchDone chan struct{}
	gone      bool // stopped: its batches are dropped

	// The newest broker time applied, and whether the consumer had more
	// messages after the last batch.
	watermark int64
	backlog   bool
	// alertsSeq is the newest ALERTS sequence published; unpublished says
	// a decision could not be published (the unit is stopping).
	alertsSeq   uint64
	unpublished bool
	// relabelLater: inventory changes of alerting devices, by device (the
	// stale inventory set). expired: the silences the tracker reported
	// expired that were deleted from the bucket.
	relabelLater map[string]labels.Set
	expired      map[string]bool
	// silencesUntil is when the expanded maintenance windows change.
	silencesUntil time.Time
}

// newUnit describes lease partition l of of (of = 0: no leases) for cfg;
// ctx is its ownership context.
func newUnit(cfg Config, l, of int, epoch uint64, ctx context.Context) *unit {
	u := &unit{l: l, of: of, epoch: epoch, ctx: ctx, name: snapshotKey, consumer: events.ConsumerEvaluator,
		filters: []string{events.PresencePrefix + ".>"}, relabelLater: map[string]labels.Set{}, expired: map[string]bool{}}
	if of > 1 {
		u.name = fmt.Sprintf("l%dof%d", l, of)
		u.consumer = events.ConsumerEvaluator + "-" + u.name
		u.scope = u.name
		u.filters = nil
		for p := l; p < cfg.Partitions; p += of {
			u.filters = append(u.filters, events.PresencePartitionFilter(p))
		}
	}
	return u
}

// unitOf is the lease partition of a device.
func (c Config) unitOf(deviceID string) int {
	if !c.leased() {
		return 0
	}
	return events.Partition(deviceID, c.Partitions) % c.Lease.Partitions
}

// consumerConfig is the unit's durable pull consumer.
func (u *unit) consumerConfig(cfg Config) jetstream.ConsumerConfig {
	cc := events.ConsumerConfig(u.consumer, "", cfg.AckWait, 4*cfg.FetchBatch)
	if len(u.filters) == 1 {
		cc.FilterSubject = u.filters[0]
	} else {
		cc.FilterSubjects = u.filters // NATS 2.10 or later
	}
	return cc
}

func (s *Service) ensureConsumer(ctx context.Context, u *unit) (jetstream.Consumer, error) {
	return events.EnsureConsumer(ctx, s.js, events.StreamPresence, u.consumerConfig(s.cfg))
}

// recoverUnit builds the unit's tracker: the stored snapshot, then the
// streams' tail (rebuild). Nothing is consumed from cons yet.
func (s *Service) recoverUnit(ctx context.Context, u *unit, cons jetstream.Consumer) error {
	tr, err := s.newTracker(u.scope)
	if err != nil {
		return err
	}
	u.tr, u.cons = tr, cons
	snap, err := s.loadSnapshot(ctx, u)
	if err != nil {
		return err
	}
	return s.rebuild(ctx, u, snap)
}

// startFetch starts the goroutine that pulls the unit's batches.
func (s *Service) startFetch(u *unit, wg *sync.WaitGroup) {
	fctx, stop := context.WithCancel(u.ctx)
	u.stopFetch, u.fetchDone = stop, make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(u.fetchDone)
		s.fetch(fctx, u, s.batches, s.cfg.FetchBatch, s.cfg.Tick)
	}()
}

// addUnit registers a running unit (processing goroutine).
func (s *Service) addUnit(u *unit) {
	s.units = append(s.units, u)
	slices.SortFunc(s.units, func(a, b *unit) int { return a.l - b.l })
	s.stats.set(u.name, func(st *unitStat) { st.owned = true })
	s.countDevices()
}

// stopUnit stops processing a unit and forgets it (processing goroutine).
func (s *Service) stopUnit(u *unit) {
	u.gone = true
	if u.stopFetch != nil {
		u.stopFetch()
	}
	s.units = slices.DeleteFunc(s.units, func(x *unit) bool { return x == u })
	s.stats.set(u.name, func(st *unitStat) { st.owned = false })
	s.countDevices()
}

// live lists the units that may process: registered, ownership valid.
func (s *Service) live() []*unit {
	out := make([]*unit, 0, len(s.units))
	for _, u := range s.units {
		if !u.gone && u.ctx.Err() == nil {
			out = append(out, u)
		}
	}
	return out
}

// unitByL returns the registered unit of lease partition l.
func (s *Service) unitByL(l int) *unit {
	for _, u := range s.units {
		if u.l == l {
			return u
		}
	}
	return nil
}

func (s *Service) countDevices() {
	n := 0
	for _, u := range s.units {
		if u.tr != nil {
			n += u.tr.Len()
		}
	}
	s.devices.Store(int64(n))
}

// unitStats are the per-unit metrics, read by the metric callbacks.
type unitStats struct {
	mu sync.Mutex
	m  map[string]*unitStat
}

type unitStat struct {
	owned       bool
	pending     uint64    // the consumer's num_pending at the last fetch
	snapBytes   int64     // the last snapshot written
	snapWritten time.Time // when
}

func (us *unitStats) set(name string, fn func(*unitStat)) {
	us.mu.Lock()
	defer us.mu.Unlock()
	if us.m == nil {
		us.m = map[string]*unitStat{}
	}
	st, ok := us.m[name]
	if !ok {
		st = &unitStat{}
		us.m[name] = st
	}
	fn(st)
}

// each calls fn for every owned unit, in name order.
func (us *unitStats) each(fn func(name string, st unitStat)) {
	us.mu.Lock()
	defer us.mu.Unlock()
	names := make([]string, 0, len(us.m))
	for n, st := range us.m {
		if st.owned {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fn(n, *us.m[n])
	}
}
