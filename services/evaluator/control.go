package evaluator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/api"
	"github.com/fleetwatch/fleetwatch/services/evaluator/inventorykv"
	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/snapshotstore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
	"github.com/nats-io/nats.go/jetstream"
)

// control is what reaches the tracker from outside the presence stream:
// API queries and reloads (requests run on the processing goroutine),
// silences (the KV set plus the configured windows), dynamic inventory
// updates and broker node health. Everything that touches the tracker, the
// label table or the inventory runs on the processing goroutine, between
// batches; the other goroutines only hand over.
type control struct {
	requests chan request
	loopDone chan struct{}

	token   string // the API token read at New
	apiAddr atomic.Pointer[string]
	api     *api.Server

	silences  *silencestore.Store
	inventory *inventorykv.Store

	// windows are the compiled maintenance windows (replaced on reload).
	windows atomic.Pointer[[]silencestore.Window]
	// kvSilences is the bucket's latest set; silencesChanged signals a new
	// one.
	kvSilences      atomic.Pointer[[]silence.Silence]
	silencesChanged chan struct{}

	invUpdates chan inventorykv.Update
	nodeEvents chan events.NodeEvent
}

// request is work for the processing goroutine.
type request struct {
	fn   func(ctx context.Context)
	done chan struct{}
}

func (c *control) init(cfg Config) error {
	c.requests = make(chan request)
	c.loopDone = make(chan struct{})
	c.silencesChanged = make(chan struct{}, 1)
	c.invUpdates = make(chan inventorykv.Update, 1024)
	c.nodeEvents = make(chan events.NodeEvent, 64)
	ws, err := silencestore.CompileWindows(cfg.Silences.Windows, "evaluator.silences.windows")
	if err != nil {
		return err
	}
	c.windows.Store(&ws)
	if c.token, err = cfg.API.LoadToken("evaluator.api"); err != nil {
		return err
	}
	return nil
}

// do runs fn on the processing goroutine and waits for it. Requests queue
// while the state is being rebuilt. When ctx ends first, fn may still run.
func (s *Service) do(ctx context.Context, fn func(ctx context.Context)) error {
	req := request{fn: fn, done: make(chan struct{})}
	select {
	case s.ctl.requests <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctl.loopDone:
		return errStopped
	}
	select {
	case <-req.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runOnLoop runs fn on the processing goroutine and waits until it ran,
// whatever happens to the caller's context; it fails only when the loop
// has ended.
func (s *Service) runOnLoop(fn func(ctx context.Context)) error {
	req := request{fn: fn, done: make(chan struct{})}
	select {
	case s.ctl.requests <- req:
	case <-s.ctl.loopDone:
		return errStopped
	}
	<-req.done
	return nil
}

// Query runs fn on the goroutine that owns the tracker (api.Backend). It
// fails while the state is being rebuilt. With lease partitions it runs on
// the one unit this replica owns; see NotOwnedError for the rest.
func (s *Service) Query(ctx context.Context, fn func(tr *tracker.Tracker)) error {
	if err := s.Ready(); err != nil {
		return err
	}
	var qerr error
	err := s.do(ctx, func(context.Context) {
		us := s.live()
		switch {
		case len(us) == 1 && us[0].of <= 1:
			fn(us[0].tr)
		default:
			qerr = &NotOwnedError{Replica: s.cfg.Lease.Replica, Unit: -1, Of: s.cfg.Lease.Partitions, Owned: unitIDs(us)}
		}
	})
	if err != nil {
		return err
	}
	return qerr
}

// ConfigSilences returns the silences of the configured maintenance windows
// in force at now or next (api.Backend).
func (s *Service) ConfigSilences(now time.Time) []silence.Silence {
	out, _ := silencestore.Expand(*s.ctl.windows.Load(), now)
	return out
}

// APIAddr returns the address the API listens on ("" when it is off or not
// started yet).
func (s *Service) APIAddr() string {
	if p := s.ctl.apiAddr.Load(); p != nil {
		return *p
	}
	return ""
}

var _ api.Backend = (*Service)(nil)

// startSide opens the KV buckets, loads the dynamic inventory and the
// silences, and starts their watchers, the silence garbage collector and
// the API. Goroutines end with ctx.
func (s *Service) startSide(ctx context.Context, wg *sync.WaitGroup) error {
	replicas, memory := s.topo.Replicas, s.topo.MemoryStorage
	err := events.OpenRetrying(ctx, s.log, "silences kv bucket "+s.cfg.Silences.Bucket, func(ctx context.Context) (err error) {
		s.ctl.silences, err = silencestore.Open(ctx, s.js, s.cfg.Silences, replicas, memory, s.log)
		return err
	})
	if err != nil {
		return err
	}
	err = events.OpenRetrying(ctx, s.log, "inventory kv bucket "+s.cfg.InventoryKV.Bucket, func(ctx context.Context) (err error) {
		s.ctl.inventory, err = inventorykv.Open(ctx, s.js, s.cfg.InventoryKV, replicas, memory, s.log)
		return err
	})
	if err != nil {
		return err
	}
	err = events.OpenRetrying(ctx, s.log, "snapshot object store "+s.cfg.SnapshotBucket, func(ctx context.Context) (err error) {
		s.snap.store, err = snapshotstore.Open(ctx, s.js, s.cfg.SnapshotBucket, replicas, memory)
		return err
	})
	if err != nil {
		return err
	}
	if s.cfg.API.Listen != "" {
		srv, err := api.New(s.cfg.API, s.ctl.token, api.Deps{Backend: s, Silences: s.ctl.silences, Inventory: s.ctl.inventory,
			Logger: s.log, Now: time.Now})
		if err != nil {
			return err
		}
		addr, err := srv.Start(ctx)
		if err != nil {
			return err
		}
		s.ctl.api = srv
		s.ctl.apiAddr.Store(&addr)
		s.log.Info("api", "url", "http://"+addr+"/api/v1/")
	}

	watch := func(name string, fn func(ctx context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := fn(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("watch "+name+", will retry", "err", err)
					sleep(ctx, time.Second)
				}
			}
		}()
	}
	watch("inventory", func(ctx context.Context) error {
		return s.ctl.inventory.Watch(ctx, func(u inventorykv.Update) {
			select {
			case s.ctl.invUpdates <- u:
			case <-ctx.Done():
			}
		})
	})
	watch("silences", func(ctx context.Context) error {
		return s.ctl.silences.Watch(ctx, func(set []silence.Silence) {
			s.ctl.kvSilences.Store(&set)
			select {
			case s.ctl.silencesChanged <- struct{}{}:
			default: // a signal is pending: it will read the newest set
			}
		})
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.ctl.silences.RunGC(ctx, time.Now)
	}()

	// The inventory and the silences in force before the replay.
	for loaded := false; !loaded; {
		select {
		case u := <-s.ctl.invUpdates:
			loaded = u.Loaded
			s.applyInventory(u)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case <-s.ctl.silencesChanged:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.log.Info("kv loaded", "inventory_entries", s.dynamic.Len(), "silences", len(*s.ctl.kvSilences.Load()))
	return nil
}

// applyInventory applies a change of the dynamic inventory to the units'
// trackers (none before they exist). A device that is alerting is
// relabelled once it recovered (see retryRelabel).
func (s *Service) applyInventory(up inventorykv.Update) {
	if up.Loaded {
		return
	}
	var old labels.Set
	if up.Labels == nil {
		old = s.dynamic.Delete(up.DeviceID)
	} else {
		var err error
		if old, err = s.dynamic.Set(up.DeviceID, up.Labels); err != nil {
			s.log.Warn("ignore a bad inventory entry", "device_id", up.DeviceID, "err", err)
			return
		}
	}
	for _, u := range s.units {
		s.relabel(u, up.DeviceID, old)
	}
}

func (s *Service) relabel(u *unit, id string, old labels.Set) {
	if u.tr == nil || u.tr.Relabel(id, old) {
		return
	}
	if _, ok := u.relabelLater[id]; !ok {
		u.relabelLater[id] = old
	}
}

// retryRelabel relabels the devices whose inventory changed while they were
// alerting, once they no longer are.
func (s *Service) retryRelabel(u *unit) {
	for id, old := range u.relabelLater {
		if u.tr.Relabel(id, old) {
			delete(u.relabelLater, id)
		}
	}
}

// silenceSet is the bucket's silences plus the configured windows' at now,
// and when the windows' part changes.
func (s *Service) silenceSet(now time.Time) ([]silence.Silence, time.Time) {
	var set []silence.Silence
	if p := s.ctl.kvSilences.Load(); p != nil {
		set = slices.Clone(*p)
	}
	ws, until := silencestore.Expand(*s.ctl.windows.Load(), now)
	return append(set, ws...), until
}

// applySilences feeds the silences in force to a unit's tracker at the
// clock's now and publishes what it decided.
func (s *Service) applySilences(u *unit) {
	s.applySilencesAt(u, s.now())
}

func (s *Service) applySilencesAt(u *unit, now time.Time) {
	set, until := s.silenceSet(now)
	u.silencesUntil = until
	s.publishDecisions(u, u.tr.Apply(tracker.Silences{Now: now, Active: set}))
	s.deleteExpired(u)
}

// deleteTimeout bounds the deletion of one expired silence.
const deleteTimeout = 5 * time.Second

// deleteExpired deletes from the bucket the silences with
// expire_when_resolved whose devices and alerts have all recovered
// (tracker.ExpiredSilences), each once: the bucket's watch then hands the
// tracker a set without them. Deleting is idempotent (one already gone is
// done), and a failure is retried after the next batch or tick. With lease
// partitions each unit's tracker decides for its own devices.
func (s *Service) deleteExpired(u *unit) {
	ctx := u.ctx
	ids := u.tr.ExpiredSilences()
	if len(ids) == 0 && len(u.expired) == 0 {
		return
	}
	done := make(map[string]bool, len(ids))
	for _, id := range ids {
		if u.expired[id] {
			done[id] = true
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
		err := s.ctl.silences.Delete(dctx, id)
		cancel()
		switch {
		case err == nil:
			s.log.Info("silence expired: everything it matched recovered, deleted", "silence_id", id)
			s.metrics.silencesExpired.Add(ctx, 1)
		case errors.Is(err, silencestore.ErrNotFound):
		default:
			if ctx.Err() == nil {
				s.log.Warn("delete an expired silence, will retry", "silence_id", id, "err", err)
			}
			continue
		}
		done[id] = true
	}
	u.expired = done
}

// publishDecisions publishes a unit's decisions not caused by a presence
// event.
func (s *Service) publishDecisions(u *unit, ds []tracker.Decision) {
	if len(ds) == 0 {
		return
	}
	out := make([]outMsg, 0, len(ds))
	for _, d := range ds {
		out = append(out, outMsg{ctx: u.ctx, alert: d.Alert})
	}
	s.publish(u, out)
}

// startNodes follows the NODES stream: the last event of every node first
// (its current health), then every new one, handed to the processing
// goroutine as tracker.Node inputs.
func (s *Service) startNodes(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := s.followNodes(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("follow node health, will retry", "err", err)
				sleep(ctx, time.Second)
			}
		}
	}()
}

func (s *Service) followNodes(ctx context.Context) error {
	cons, err := s.js.OrderedConsumer(ctx, events.StreamNodes, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.NodesPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("node consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("node consumer: %w", err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("node consumer: %w", err)
		}
		var e events.NodeEvent
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			s.log.Warn("skip a bad node event", "subject", m.Subject(), "err", err)
			continue
		}
		if err := e.Validate(); err != nil {
			s.log.Warn("skip a bad node event", "subject", m.Subject(), "err", err)
			continue
		}
		select {
		case s.ctl.nodeEvents <- e:
		case <-ctx.Done():
			return nil
		}
	}
}
