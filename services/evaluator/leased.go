package evaluator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/lease"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// Lease mode (evaluator.lease.replica set; docs/scaling.md).
//
// The replicas share L = evaluator.lease.partitions ownership units through
// package lease. Unit l covers the presence partitions p with p mod L = l;
// a replica runs one tracker per unit it owns, each with its own durable
// consumer ("evaluator-l<l>of<L>", filtered to the unit's subjects; with
// L = 1 the consumer "evaluator" of the single-instance mode) and its own
// snapshot (key "l<l>of<L>"; "all" with L = 1). All of a replica's trackers
// run on its one processing goroutine (loop): the label table, the
// inventory and the silences are shared and stay single-threaded.
//
//   - Acquire(l, epoch) runs on the processing goroutine: a new tracker, the
//     unit's snapshot, the restart recovery of the package doc restricted
//     to the unit's subjects (alert ids in ALERTS after the snapshot are
//     marked alerted; the unit's PRESENCE tail is replayed; one tick), a
//     snapshot with the new epoch (which fences older owners' snapshot
//     writes), and only then the consumer is fetched from.
//   - Release(l, reason) stops the unit (its batches are no longer applied,
//     its fetch goroutine ends, what it fetched is handed back with a nak)
//     and, unless the lease was lost, writes a final snapshot.
//
// Every unit's processing checks its ownership context: once the lease
// manager cancels it, nothing of the unit is applied or published, even
// before Release ran.

// runLeased is Run in lease mode.
func (s *Service) runLeased(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	s.runWG = &wg
	sideCtx, stopSide := context.WithCancel(ctx)
	defer stopSide()
	// The processing goroutine outlives ctx: at shutdown the lease manager
	// releases every unit through it (final snapshots) before Run returns.
	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoop()
	looping := false
	defer func() {
		if !looping {
			close(s.ctl.loopDone)
		}
	}()
	if err := s.startSide(sideCtx, &wg); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.startNodes(sideCtx, &wg)
	s.startSnapshotWriter(loopCtx, &wg)
	managed := make(chan error, 1)
	go func() {
		err := s.leases.Run(ctx)
		managed <- err
		stopLoop()
	}()
	s.setReady(nil)
	s.log.Info("evaluating with partition leases", "replica", s.cfg.Lease.Replica, "lease_partitions", s.cfg.Lease.Partitions,
		"partitions", s.cfg.Partitions, "grace", s.cfg.Grace, "receivers", s.cfg.Receivers)
	looping = true
	s.loop(loopCtx)
	close(s.ctl.loopDone)
	err := <-managed
	for _, u := range slices.Clone(s.units) { // not expected: the manager released them
		s.stopUnit(u)
	}
	if err != nil && ctx.Err() != nil {
		s.log.Warn("lease manager at shutdown", "err", err)
		return nil
	}
	return err
}

// acquireUnit is the lease.Handler's Acquire: ctx is the unit's ownership
// context.
func (s *Service) acquireUnit(ctx context.Context, l int, epoch uint64) error {
	u := newUnit(s.cfg, l, s.cfg.Lease.Partitions, epoch, ctx)
	var err error
	if rerr := s.runOnLoop(func(context.Context) { err = s.startUnit(u) }); rerr != nil {
		return rerr
	}
	return err
}

// startUnit recovers a unit's state and starts consuming it (processing
// goroutine).
func (s *Service) startUnit(u *unit) error {
	started := time.Now()
	if old := s.unitByL(u.l); old != nil {
		s.stopUnit(old) // not expected: Release precedes a new Acquire
	}
	cons, err := s.ensureConsumer(u.ctx, u)
	if err != nil {
		return err
	}
	if err := s.recoverUnit(u.ctx, u, cons); err != nil {
		return fmt.Errorf("recover unit %s: %w", u.name, err)
	}
	// A snapshot with the new epoch at once: from now on an older owner
	// that missed losing its lease cannot replace the unit's snapshot.
	ts, err := s.takeSnapshot(u.ctx, u)
	if err == nil {
		err = s.writeSnapshot(u.ctx, ts)
	}
	switch {
	case errors.Is(err, snapshotstore.ErrFenced):
		return err
	case err != nil:
		if u.ctx.Err() != nil {
			return u.ctx.Err()
		}
		s.log.Warn("take-over snapshot, the periodic one will follow", "unit", u.name, "err", err)
	}
	if err := u.ctx.Err(); err != nil {
		return err
	}
	s.startFetch(u, s.runWG)
	s.addUnit(u)
	s.log.Info("unit acquired", "unit", u.name, "epoch", u.epoch, "devices", u.tr.Len(),
		"took", time.Since(started).Round(time.Millisecond))
	return nil
}

// releaseUnit is the lease.Handler's Release.
func (s *Service) releaseUnit(ctx context.Context, l int, reason lease.Reason) error {
	var (
		u   *unit
		err error
	)
	if rerr := s.runOnLoop(func(context.Context) {
		if u = s.unitByL(l); u == nil {
			return
		}
		s.stopUnit(u)
		if reason != lease.Lost && ctx.Err() == nil {
			err = s.finalSnapshot(ctx, u)
		}
	}); rerr != nil {
		return rerr
	}
	if u != nil {
		<-u.fetchDone
	}
	return err
}

// NotOwnedError answers an API query this replica cannot: the device's
// lease partition is owned by another replica, or the query spans several
// lease partitions.
type NotOwnedError struct {
	Replica string
	// Unit is the device's lease partition (-1: the query is not about one
	// device), Of the number of lease partitions.
	Unit, Of int
	// Owned lists the lease partitions this replica owns.
	Owned []int
}

func (e *NotOwnedError) Error() string {
	owned := make([]string, len(e.Owned))
	for i, l := range e.Owned {
		owned[i] = strconv.Itoa(l)
	}
	if e.Unit >= 0 {
		return fmt.Sprintf("replica %s does not own lease partition %d of %d, where this device lives (it owns [%s]): ask the replica that does",
			e.Replica, e.Unit, e.Of, strings.Join(owned, " "))
	}
	return fmt.Sprintf("replica %s owns lease partitions [%s] of %d: this query needs exactly one (evaluator.lease.partitions 1), ask for a single device instead",
		e.Replica, strings.Join(owned, " "), e.Of)
}

// HTTPStatus is the API's answer: 409 Conflict.
func (e *NotOwnedError) HTTPStatus() int { return http.StatusConflict }

func unitIDs(us []*unit) []int {
	out := make([]int, len(us))
	for i, u := range us {
		out[i] = u.l
	}
	return out
}

// QueryDevice runs fn on the tracker that owns deviceID (api.DeviceBackend);
// a NotOwnedError when this replica does not own the device's lease
// partition.
func (s *Service) QueryDevice(ctx context.Context, deviceID string, fn func(tr *tracker.Tracker)) error {
	if err := s.Ready(); err != nil {
		return err
	}
	want := s.cfg.unitOf(deviceID)
	var qerr error
	err := s.do(ctx, func(context.Context) {
		for _, u := range s.live() {
			if u.l == want {
				fn(u.tr)
				return
			}
		}
		qerr = &NotOwnedError{Replica: s.cfg.Lease.Replica, Unit: want, Of: s.cfg.Lease.Partitions, Owned: unitIDs(s.live())}
	})
	if err != nil {
		return err
	}
	return qerr
}

// Owned lists the lease partitions this replica processes (nil without
// leases).
func (s *Service) Owned() []int {
	if s.leases == nil {
		return nil
	}
	return s.leases.Owned()
}
