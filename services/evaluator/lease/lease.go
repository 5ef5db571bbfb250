// Package lease shares the presence partitions among the evaluator replicas
// through leases in a NATS KV bucket, and hands a partition from one replica
// to another without a moment where both process it.
//
// # Bucket
//
// One KV bucket (DefaultBucket, history 1, per-key TTLs) holds two kinds of
// keys, both written with a per-message TTL (Nats-TTL) of the writer's
// Config.TTL, so that a key its writer stops renewing disappears TTL later:
//
//   - p.<n>, the lease of partition n: {owner, instance, epoch}. Claimed with
//     Create (which fails if the key exists), renewed with a
//     revision-checked write (compare-and-set on the key's last revision),
//     released by purging it (also revision-checked). When a check fails,
//     the key is read from the stream leader (not with a direct get, which
//     a lagging replica may answer) to tell our own unacknowledged write
//     from another replica's.
//   - m.<replica>, a replica's membership heartbeat: {owner, instance,
//     joining, partitions}, rewritten every Config.Renew and purged on a clean
//     shutdown.
//
// # Sharing
//
// Every Config.Renew a replica renews its heartbeat and leases (on a
// goroutine of their own, so that nothing else delays them). On the same
// interval, and at once when a watch of the bucket shows a lease released or
// expired or a member joining, settling or leaving, it reads the bucket and
// compares the number of partitions it owns with its fair share of the live
// members: floor(P/n),
// plus one for the first P mod n members in name order, so that the shares add
// up to P and every replica computes the same ones. Above its share it hands
// partitions over (the ones it scores lowest by rendezvous hashing); below
// it, it claims free partitions (the ones it scores highest). A replica is
// "joining" during its first renewal interval: it claims nothing and others
// do not hand it partitions yet, so replicas that start together see each
// other before anyone claims everything.
//
// # Hand-over
//
// A hand-over never overlaps: the owner cancels the partition's processing
// context, calls Handler.Release (which returns once processing has stopped,
// after a flush or snapshot) while it keeps renewing the lease, and only then
// purges the lease key; the next owner can claim it only once the key is
// gone, and calls Handler.Acquire after its claim succeeded.
//
// # Guarantees
//
// At most one replica processes a partition at a time, provided that the
// Handler stops processing within Config.Margin of the ownership context
// being cancelled and that the replica is not paused for longer than the
// margin. The reasoning needs no synchronised clocks, only clocks that run
// at about the same rate:
//
//   - A replica sends a claim or renewal at t0 on its own monotonic clock.
//     The server stores it at a moment no earlier than t0 and removes the key
//     TTL later by its own clock (never earlier: the server's TTL timer only
//     removes messages whose time is up). So the lease cannot be claimed by
//     anyone before t0 + TTL.
//   - The replica treats the lease as valid until t0 + TTL - Margin of its
//     last acknowledged write. A timer cancels the partition's contexts at that
//     moment unless a renewal was acknowledged since, and calls Release with
//     reason Lost. When a renewal finds the key gone or rewritten by another
//     replica, the same happens at once.
//
// The margin must therefore cover the handler's stop latency, Go timer and
// scheduling delays, and the clock skew between the NATS servers of a
// cluster (a follower that becomes leader expires keys by its own clock).
// A replica frozen for longer than the margin (a stopped VM, a long GC
// pause) may still act after its lease expired: for that, each lease has an
// epoch, the revision at which it was claimed, which strictly increases for
// a partition from one owner to the next (for the life of the bucket). Writes
// that must never come from a stale owner (snapshots) should carry the epoch
// and be rejected when older than the newest seen. Not guaranteed: that a
// partition is always owned (it is free during a hand-over and for up to TTL
// after its owner died), and anything after the bucket is deleted (epochs
// restart).
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Reason says why a partition is released.
type Reason int

// Release reasons.
const (
	// Rebalance: another replica needs the partition. Flush and snapshot;
	// the lease is renewed until Release returns.
	Rebalance Reason = iota + 1
	// Shutdown: Run's context ended. As for Rebalance.
	Shutdown
	// Lost: the lease could not be renewed in time or was taken over. The
	// context passed to Release is already cancelled: stop, write nothing.
	Lost
)

func (r Reason) String() string {
	switch r {
	case Rebalance:
		return "rebalance"
	case Shutdown:
		return "shutdown"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Handler is what the evaluator does when it gains or loses a partition.
// For one partition, Acquire and Release never run at the same time, and
// Release follows only an Acquire that returned nil.
type Handler struct {
	// Acquire is called once the lease of partition p is claimed, with the
	// lease's epoch. ctx is the partition's ownership context: it is
	// cancelled when the replica must stop processing p (hand-over, shutdown
	// or a lease that can no longer be renewed), at the latest Config.Margin
	// before the lease can expire. Acquire should load the partition's state,
	// start processing it under ctx, and return; the lease is renewed while
	// it runs. An error means nothing is running: the lease is released, and
	// this replica claims the partition again after a back-off (Renew,
	// doubling with each failure in a row, at most TTL).
	Acquire func(ctx context.Context, p int, epoch uint64) error
	// Release is called after the ownership context of p was cancelled, and
	// must return only once processing of p has stopped. ctx is valid as
	// long as the lease is: for Rebalance and Shutdown it may flush and
	// snapshot (the lease is renewed until Release returns); it is cancelled
	// if the lease is lost meanwhile, and is already cancelled for Lost. An
	// error is logged; the lease is released anyway.
	Release func(ctx context.Context, p int, reason Reason) error
}

// Deps are the Manager's collaborators.
type Deps struct {
	// JetStream is the replica's JetStream context (required).
	JetStream jetstream.JetStream
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// MeterProvider defaults to the otel global.
	MeterProvider metric.MeterProvider
}

// markerTTL is how long the bucket keeps the marker of a released (purged)
// or expired key; watchers learn about expiries through these markers.
const markerTTL = time.Minute

// Manager claims, renews, hands over and releases the partition leases of
// one replica. Create it with New, then call Run once.
type Manager struct {
	cfg      Config
	h        Handler
	js       jetstream.JetStream
	log      *slog.Logger
	metrics  *metrics
	instance string
	wake     chan struct{}
	started  atomic.Bool

	// Set by Run before anything else runs.
	kv   jetstream.KeyValue
	base context.Context // Run's context without its cancellation

	beatMu sync.Mutex // held while a heartbeat is written

	mu       sync.Mutex
	leases   map[int]*lease    // every partition this replica holds a lease of
	cooldown map[int]time.Time // partitions not to claim before then (Acquire failed)
	failures map[int]int       // consecutive Acquire failures per partition
	members  []string          // live members at the last read, sorted, self included
	joining  map[string]bool   // live members at the last read: joining or not
	warned   map[string]bool   // members already warned about
	failing  map[string]bool   // kinds of bucket operations failing (logged once)
	beats    int               // acknowledged heartbeats
	settled  bool              // a heartbeat without "joining" was acknowledged
	leaving  bool              // shutting down
}

// phase is where a held lease is in its life.
type phase int

const (
	acquiring phase = iota // Acquire is running
	owned                  // processing
	releasing              // Release is running
	finished               // processing stopped; the key is to be purged
)

// lease is a partition lease this replica holds.
type lease struct {
	p     int
	epoch uint64
	// Guarded by Manager.mu.
	rev        uint64    // revision of our last acknowledged write
	deadline   time.Time // t0 + TTL - Margin of that write (monotonic)
	timer      *time.Timer
	valid      context.Context // cancelled when the lease is lost or dropped
	invalidate context.CancelFunc
	own        context.Context // valid, and cancelled when processing must stop
	disown     context.CancelFunc
	phase      phase
	reason     Reason // why it is being released; 0 while kept
	lost       bool
}

// New validates cfg and builds a Manager; it does no I/O.
func New(cfg Config, h Handler, deps Deps) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h.Acquire == nil || h.Release == nil {
		return nil, errors.New("lease: Handler.Acquire and Handler.Release are both required")
	}
	if deps.JetStream == nil {
		return nil, errors.New("lease: Deps.JetStream is nil: pass the replica's JetStream context")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.MeterProvider == nil {
		deps.MeterProvider = otel.GetMeterProvider()
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	m := &Manager{
		cfg:      cfg,
		h:        h,
		js:       deps.JetStream,
		log:      deps.Logger.With("replica", cfg.Replica),
		instance: hex.EncodeToString(id[:]),
		wake:     make(chan struct{}, 1),
		leases:   map[int]*lease{},
		cooldown: map[int]time.Time{},
		failures: map[int]int{},
		joining:  map[string]bool{},
		warned:   map[string]bool{},
		failing:  map[string]bool{},
		members:  []string{cfg.Replica},
	}
	var err error
	if m.metrics, err = newMetrics(deps.MeterProvider, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Config is the configuration in use, defaults applied.
func (m *Manager) Config() Config { return m.cfg }

// Owned lists the partitions this replica processes (acquired, not being
// released), in ascending order.
func (m *Manager) Owned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for p, l := range m.leases {
		if l.phase == owned && l.reason == 0 {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Epoch is the epoch of this replica's lease of partition p, if it holds one.
func (m *Manager) Epoch(p int) (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[p]; ok && !l.lost {
		return l.epoch, true
	}
	return 0, false
}

// Members lists the live replicas seen at the last read of the bucket
// (joining ones included), sorted.
func (m *Manager) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// Run creates the bucket if needed (history 1, per-key TTLs, file storage,
// Config.BucketReplicas; it retries while NATS does not answer, and fails at
// once on a bucket it cannot use), then joins, claims, renews and rebalances
// until ctx ends. Then it leaves the membership, releases every partition (Release
// with reason Shutdown, renewing the leases meanwhile) and purges the lease
// keys, so that other replicas take over at once; it returns an error if that
// takes longer than Config.ShutdownTimeout. A replica that cannot reach NATS
// keeps running: it gives up its leases as they run out and rejoins when NATS
// is back.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("lease: Run called twice")
	}
	m.base = context.WithoutCancel(ctx)
	kv, err := m.openRetrying(ctx)
	if err != nil {
		return err
	}
	m.kv = kv

	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		m.watch(watchCtx)
	}()
	defer func() {
		stopWatch()
		<-watched
	}()

	// Renewals run on their own, so that a slow read or claim never delays
	// them; they go on during the shutdown, until every lease is released.
	renewCtx, stopRenew := context.WithCancel(m.base)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		m.renewLoop(renewCtx)
	}()
	defer func() {
		stopRenew()
		<-renewed
	}()

	ticker := time.NewTicker(m.cfg.Renew)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			stopWatch()
			return m.shutdown(m.base)
		case <-ticker.C:
		case <-m.wake:
		}
		m.step(ctx)
	}
}

// renewLoop writes the heartbeat (until the shutdown) and renews the
// leases every Config.Renew.
func (m *Manager) renewLoop(ctx context.Context) {
	ticker := time.NewTicker(m.cfg.Renew)
	defer ticker.Stop()
	for {
		m.heartbeat(ctx)
		m.renewAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// openTimeout bounds one attempt to create or open the bucket.
const openTimeout = 5 * time.Second

// unusableError is a bucket that cannot be used as it is: retrying does not
// help.
type unusableError struct{ error }

func (e unusableError) Unwrap() error { return e.error }

// openRetrying opens the bucket, retrying every Config.Renew until ctx ends
// unless the bucket is unusable. Replicas starting together on a cluster
// create the bucket concurrently, and some of their requests can time out.
func (m *Manager) openRetrying(ctx context.Context) (jetstream.KeyValue, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, openTimeout)
		kv, err := m.open(actx)
		cancel()
		var unusable unusableError
		switch {
		case err == nil:
			m.fine("open bucket")
			return kv, nil
		case errors.As(err, &unusable) || ctx.Err() != nil:
			return nil, err
		}
		m.trouble("open bucket", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(m.cfg.Renew):
		}
	}
}

// open creates or opens the bucket and checks that keys expire by their
// per-message TTL and no earlier.
func (m *Manager) open(ctx context.Context) (jetstream.KeyValue, error) {
	b := m.cfg.Bucket
	kv, err := m.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         b,
		Description:    "fleetwatch evaluator: partition leases (p.<n>) and replica membership (m.<replica>)",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       m.cfg.BucketReplicas,
		LimitMarkerTTL: markerTTL,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = m.js.KeyValue(ctx, b)
	}
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, unusableError{fmt.Errorf("lease bucket %s: per-key TTLs need NATS server 2.11 or later: %w", b, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: create or open: %w", b, err)
	}
	st, err := m.js.Stream(ctx, "KV_"+b)
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: stream info: %w", b, err)
	}
	sc := st.CachedInfo().Config
	switch {
	case !sc.AllowMsgTTL:
		return nil, unusableError{fmt.Errorf("lease bucket %s does not allow per-key TTLs: delete it (nats kv del %s) and let the evaluator create it", b, b)}
	case sc.MaxAge > 0 && sc.MaxAge < m.cfg.TTL:
		return nil, unusableError{fmt.Errorf("lease bucket %s expires keys after %s, before evaluator.lease.ttl %s: remove the bucket's TTL or delete the bucket (nats kv del %s)", b, sc.MaxAge, m.cfg.TTL, b)}
	}
	return kv, nil
}

// trouble logs a failed bucket operation: at warning level the first time,
// then at debug level until one of the same kind succeeds, so that a
// replica cut off from NATS does not log every interval for every lease.
func (m *Manager) trouble(op string, err error, args ...any) {
	m.mu.Lock()
	first := !m.failing[op]
	m.failing[op] = true
	m.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	m.log.Log(m.base, level, "lease: "+op+" failed", append(args, "err", err)...)
}

// fine notes that an operation of this kind succeeded.
func (m *Manager) fine(op string) {
	m.mu.Lock()
	was := m.failing[op]
	delete(m.failing, op)
	m.mu.Unlock()
	if was {
		m.log.Info("lease: " + op + " works again")
	}
}

// poke asks the loop for an early step.
func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// step is one round: purge of released leases, read of the bucket, claims
// and hand-overs.
func (m *Manager) step(ctx context.Context) {
	m.cleanup(ctx)
	v, err := m.read(ctx)
	if err != nil {
		if ctx.Err() == nil {
			m.trouble("read bucket", err)
		}
		return
	}
	m.fine("read bucket")
	m.balance(ctx, v)
}

// put writes key with the lease TTL; with expect, only if the key's last
// revision is *expect (0: the key does not exist).
func (m *Manager) put(ctx context.Context, key string, value []byte, expect *uint64) (uint64, error) {
	// nats.go's KeyValue.Update cannot set a TTL (the new revision would
	// never expire), so renewals publish to the bucket's subject directly,
	// as Update does, with a TTL.
	msg := &nats.Msg{Subject: "$KV." + m.cfg.Bucket + "." + key, Data: value}
	opts := []jetstream.PublishOpt{jetstream.WithMsgTTL(m.cfg.TTL)}
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	ack, err := m.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// isConflict reports a failed revision check.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func (m *Manager) record(epoch uint64) record {
	return record{
		Owner:         m.cfg.Replica,
		Instance:      m.instance,
		Epoch:         epoch,
		TTLMillis:     m.cfg.TTL.Milliseconds(),
		WrittenMillis: time.Now().UnixMilli(),
	}
}

// heartbeat writes the membership key: "joining" until one heartbeat was
// acknowledged, then settled. It writes nothing once the shutdown began.
func (m *Manager) heartbeat(ctx context.Context) {
	m.beatMu.Lock()
	defer m.beatMu.Unlock()
	m.mu.Lock()
	joining, leaving := m.beats == 0, m.leaving
	m.mu.Unlock()
	if leaving {
		return
	}
	rec := m.record(0)
	rec.Joining = joining
	rec.Partitions = m.cfg.Partitions
	hctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
	defer cancel()
	if _, err := m.put(hctx, memberKey(m.cfg.Replica), rec.encode(), nil); err != nil {
		if ctx.Err() == nil {
			m.trouble("heartbeat", err)
		}
		return
	}
	m.fine("heartbeat")
	m.mu.Lock()
	m.beats++
	settles := !joining && !m.settled
	m.settled = m.settled || !joining
	m.mu.Unlock()
	if settles {
		m.poke()
	}
}

// renewAll renews every lease still in use, concurrently.
func (m *Manager) renewAll(ctx context.Context) {
	m.mu.Lock()
	var todo []*lease
	for _, l := range m.leases {
		if l.phase != finished && !l.lost {
			todo = append(todo, l)
		}
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range todo {
		wg.Go(func() { m.renew(ctx, l) })
	}
	wg.Wait()
}

// renew extends one lease by a revision-checked write. A conflict caused by
// our own earlier write (whose acknowledgement was lost) is resolved by
// retrying on its revision; any other conflict, or a missing key, loses the
// lease at once. Other errors leave it to the deadline timer.
func (m *Manager) renew(ctx context.Context, l *lease) {
	m.mu.Lock()
	rev, deadline := l.rev, l.deadline
	m.mu.Unlock()
	// No answer after the deadline helps; nor one after the next round began.
	if next := time.Now().Add(m.cfg.Renew); next.Before(deadline) {
		deadline = next
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	key := partitionKey(l.p)
	value := m.record(l.epoch).encode()
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		next, err := m.put(rctx, key, value, &rev)
		if err == nil {
			m.mu.Lock()
			l.rev = next
			if !l.lost {
				l.deadline = t0.Add(m.cfg.TTL - m.cfg.Margin)
				l.timer.Reset(time.Until(l.deadline))
			}
			m.mu.Unlock()
			m.metrics.renewals.Add(m.base, 1, outcomeOK)
			m.fine("renew")
			return
		}
		if !isConflict(err) || attempt > 0 {
			m.metrics.renewals.Add(m.base, 1, outcomeFailed)
			if ctx.Err() == nil {
				m.trouble("renew", err, "partition", l.p, "epoch", l.epoch)
			}
			return
		}
		e, err := m.last(rctx, key)
		switch {
		case err != nil:
			m.metrics.renewals.Add(m.base, 1, outcomeFailed)
			return
		case m.mine(e, l.epoch):
			rev = e.rev // retry on our own write
			continue
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if l.phase == finished {
			return // released and purged meanwhile
		}
		m.metrics.renewals.Add(m.base, 1, outcomeLost)
		m.lose(l, "lease expired or taken over")
		return
	}
}

// entry is the last write of a key; found is false for a missing, deleted,
// purged or expired key.
type entry struct {
	rev   uint64
	value []byte
	found bool
}

// last reads the last write of a key from the bucket's stream leader.
// KeyValue.Get is not used: a bucket allows direct gets, which any replica
// of an R3 bucket answers, possibly one that lags behind.
func (m *Manager) last(ctx context.Context, key string) (entry, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": "$KV." + m.cfg.Bucket + "." + key})
	msg, err := m.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+m.cfg.Bucket, req)
	if err != nil {
		return entry{}, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return entry{}, fmt.Errorf("stream message get: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return entry{}, nil
	case resp.Error != nil:
		return entry{}, resp.Error
	case resp.Message == nil:
		return entry{}, errors.New("stream message get: empty answer")
	}
	e := entry{rev: resp.Message.Seq, value: resp.Message.Data, found: true}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return entry{}, fmt.Errorf("stream message get: %w", err)
		}
		// A delete or purge marker, or the server's marker of an expiry.
		if h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "" {
			e.found = false
		}
	}
	return e, nil
}

// mine reports whether a lease entry was written by this Manager for the
// lease of the given epoch (a claim carries epoch 0 and has it as revision).
func (m *Manager) mine(e entry, epoch uint64) bool {
	if !e.found {
		return false
	}
	r, err := decodeRecord(e.value)
	if err != nil || r.Instance != m.instance {
		return false
	}
	return r.Epoch == epoch || (r.Epoch == 0 && e.rev == epoch)
}

// expire runs at a lease's deadline: unless it was renewed meanwhile, the
// lease is lost.
func (m *Manager) expire(l *lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if time.Now().Before(l.deadline) {
		return // renewed; the timer was re-armed
	}
	m.lose(l, "not renewed in time")
}

// lose invalidates a lease: its contexts are cancelled and processing must
// stop. Mutex held.
func (m *Manager) lose(l *lease, why string) {
	if l.lost {
		return
	}
	l.lost = true
	l.timer.Stop()
	l.invalidate()
	if l.phase != finished {
		m.metrics.losses.Add(m.base, 1)
		m.log.Warn("lease: partition lost, processing stops", "partition", l.p, "epoch", l.epoch, "why", why)
	}
	m.requestRelease(l, Lost)
}

// requestRelease ends processing of a partition: its ownership context is
// cancelled and Release runs (after Acquire, if that is still running).
// Mutex held.
func (m *Manager) requestRelease(l *lease, reason Reason) {
	if l.reason != 0 {
		return
	}
	l.reason = reason
	l.disown()
	if l.phase == owned {
		m.startRelease(l)
	}
}

// startRelease runs Release. Mutex held.
func (m *Manager) startRelease(l *lease) {
	l.phase = releasing
	reason := l.reason
	go func() {
		err := m.h.Release(l.valid, l.p, reason)
		if err != nil {
			m.log.Warn("lease: release", "partition", l.p, "epoch", l.epoch, "reason", reason.String(), "err", err)
		} else {
			m.log.Info("lease: released", "partition", l.p, "epoch", l.epoch, "reason", reason.String())
		}
		m.metrics.releases.Add(m.base, 1, metric.WithAttributeSet(reasonAttrs(reason)))
		m.mu.Lock()
		l.phase = finished
		m.mu.Unlock()
		m.poke()
	}()
}

// acquire runs Acquire for a freshly claimed lease.
func (m *Manager) acquire(l *lease) {
	err := m.h.Acquire(l.own, l.p, l.epoch)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.metrics.acquisitions.Add(m.base, 1, outcomeFailed)
		m.log.Warn("lease: acquire", "partition", l.p, "epoch", l.epoch, "err", err)
		l.phase = finished
		l.disown()
		// Retry after Renew, doubling on each failure in a row, up to a TTL.
		m.failures[l.p]++
		m.cooldown[l.p] = time.Now().Add(min(m.cfg.Renew<<min(m.failures[l.p]-1, 16), m.cfg.TTL))
		m.poke()
		return
	}
	delete(m.failures, l.p)
	m.metrics.acquisitions.Add(m.base, 1, outcomeOK)
	m.log.Info("lease: acquired", "partition", l.p, "epoch", l.epoch)
	if l.reason != 0 {
		m.startRelease(l)
		return
	}
	l.phase = owned
}

// cleanup purges the keys of leases whose processing has stopped.
func (m *Manager) cleanup(ctx context.Context) {
	m.mu.Lock()
	var done []*lease
	for _, l := range m.leases {
		if l.phase == finished {
			done = append(done, l)
		}
	}
	m.mu.Unlock()
	for _, l := range done {
		m.mu.Lock()
		rev, deadline := l.rev, l.deadline
		m.mu.Unlock()
		if err := m.purge(ctx, l.p, rev, l.epoch); err != nil && time.Now().Before(deadline.Add(m.cfg.Margin)) {
			if ctx.Err() == nil {
				m.trouble("purge", err, "partition", l.p)
			}
			continue // retried next step; the key expires by itself otherwise
		}
		m.mu.Lock()
		l.timer.Stop()
		l.invalidate()
		delete(m.leases, l.p)
		m.mu.Unlock()
	}
}

// purge deletes our lease key of partition p, unless someone else's write
// replaced it.
func (m *Manager) purge(ctx context.Context, p int, rev, epoch uint64) error {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
	defer cancel()
	key := partitionKey(p)
	err := m.kv.Purge(pctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return err
	}
	e, err := m.last(pctx, key)
	switch {
	case err != nil:
		return err
	case !m.mine(e, epoch):
		return nil // gone, or someone else's now
	}
	return m.kv.Purge(pctx, key, jetstream.LastRevision(e.rev), jetstream.PurgeTTL(markerTTL))
}

// view is what one read of the bucket found.
type view struct {
	members map[string]record // live members by name
	leases  map[int]holder    // live leases by partition
}

type holder struct {
	rev uint64
	rec record
	ok  bool // rec decoded
}

// read returns the live keys of the bucket.
func (m *Manager) read(ctx context.Context) (view, error) {
	rctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
	defer cancel()
	w, err := m.kv.WatchAll(rctx, jetstream.IgnoreDeletes())
	if err != nil {
		return view{}, err
	}
	defer stopWatcher(w)
	v := view{members: map[string]record{}, leases: map[int]holder{}}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return view{}, errors.New("watcher closed")
			}
			if e == nil {
				return v, nil
			}
			if name, ok := strings.CutPrefix(e.Key(), memberPrefix); ok {
				r, err := decodeRecord(e.Value())
				if err != nil {
					r = record{Owner: name}
				}
				v.members[name] = r
			} else if p, ok := parsePartitionKey(e.Key(), m.cfg.Partitions); ok {
				r, err := decodeRecord(e.Value())
				v.leases[p] = holder{rev: e.Revision(), rec: r, ok: err == nil}
			}
		case <-rctx.Done():
			return view{}, rctx.Err()
		}
	}
}

// stopWatcher stops a KV watcher and drains it, so that its delivery
// goroutine never blocks on a full channel.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// balance hands partitions over above the fair share, claims free ones
// below it, and purges leases of ours that this Manager does not know (a
// claim whose acknowledgement was lost).
func (m *Manager) balance(ctx context.Context, v view) {
	self := m.cfg.Replica
	m.mu.Lock()
	all, settled := []string{self}, []string{self}
	joining := make(map[string]bool, len(v.members))
	for name, r := range v.members {
		joining[name] = r.Joining
		if name == self {
			if r.Instance != m.instance && !m.warned[name] {
				m.warned[name] = true
				m.log.Error("lease: another evaluator instance uses this replica name: give every replica its own evaluator.lease.replica", "other_instance", r.Instance)
			}
			continue
		}
		all = append(all, name)
		if !r.Joining {
			settled = append(settled, name)
		}
		if r.Partitions != 0 && r.Partitions != m.cfg.Partitions && !m.warned[name] {
			m.warned[name] = true
			m.log.Error("lease: replicas disagree on the partition count: set the same evaluator.partitions everywhere",
				"other", name, "other_partitions", r.Partitions, "partitions", m.cfg.Partitions)
		}
	}
	slices.Sort(all)
	slices.Sort(settled)
	m.members, m.joining = all, joining
	// Hand over above the share among settled members; claim up to the share
	// among all members, so that nothing is claimed that a joining member is
	// about to need (and never more than would be handed over again).
	keep := quota(self, settled, m.cfg.Partitions)
	want := min(quota(self, all, m.cfg.Partitions), keep)

	var active []int
	for p, l := range m.leases {
		if l.reason == 0 && l.phase != finished {
			active = append(active, p)
		}
	}
	if len(active) > keep {
		byPreference(self, active)
		for _, p := range active[keep:] {
			m.requestRelease(m.leases[p], Rebalance)
		}
	}
	need := 0
	if m.settled && !m.leaving {
		need = want - len(active)
	}
	var free []int
	orphans := map[int]uint64{}
	now := time.Now()
	for p := range m.cfg.Partitions {
		h, taken := v.leases[p]
		_, held := m.leases[p]
		switch {
		case taken && !held && h.ok && h.rec.Instance == m.instance:
			orphans[p] = h.rev
		case !taken && !held && !now.Before(m.cooldown[p]):
			free = append(free, p)
		}
	}
	m.mu.Unlock()

	for p, rev := range orphans {
		pctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
		if err := m.kv.Purge(pctx, partitionKey(p), jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL)); err != nil && ctx.Err() == nil {
			m.trouble("purge", err, "partition", p)
		}
		cancel()
	}
	if need <= 0 {
		return
	}
	byPreference(self, free)
	for _, p := range free {
		if need == 0 || ctx.Err() != nil {
			break
		}
		if m.claim(ctx, p) {
			need--
		}
	}
}

// claim creates the lease key of a free partition and starts Acquire.
func (m *Manager) claim(ctx context.Context, p int) bool {
	cctx, cancel := context.WithTimeout(ctx, m.cfg.Renew)
	defer cancel()
	t0 := time.Now()
	rev, err := m.kv.Create(cctx, partitionKey(p), m.record(0).encode(), jetstream.KeyTTL(m.cfg.TTL))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			m.trouble("claim", err, "partition", p)
		}
		return false
	}
	m.fine("claim")
	l := &lease{p: p, epoch: rev, rev: rev, deadline: t0.Add(m.cfg.TTL - m.cfg.Margin), phase: acquiring}
	l.valid, l.invalidate = context.WithCancel(m.base)
	l.own, l.disown = context.WithCancel(l.valid)
	m.mu.Lock()
	l.timer = time.AfterFunc(time.Until(l.deadline), func() { m.expire(l) })
	m.leases[p] = l
	m.mu.Unlock()
	go m.acquire(l)
	return true
}

// shutdown leaves the membership, releases every partition and purges the
// lease keys.
func (m *Manager) shutdown(base context.Context) error {
	ctx, cancel := context.WithTimeout(base, m.cfg.ShutdownTimeout)
	defer cancel()
	m.beatMu.Lock() // no heartbeat in flight may outlive the purge below
	m.mu.Lock()
	m.leaving = true
	for _, l := range m.leases {
		m.requestRelease(l, Shutdown)
	}
	m.mu.Unlock()
	m.beatMu.Unlock()
	// Leave first: when the partitions become free, the others already
	// count without this replica and claim them.
	lctx, lcancel := context.WithTimeout(ctx, m.cfg.Renew)
	if err := m.kv.Purge(lctx, memberKey(m.cfg.Replica), jetstream.PurgeTTL(markerTTL)); err != nil {
		m.log.Warn("lease: leave membership", "err", err)
	}
	lcancel()

	ticker := time.NewTicker(m.cfg.Renew)
	defer ticker.Stop()
	for {
		m.cleanup(ctx)
		m.mu.Lock()
		n := len(m.leases)
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ticker.C:
		case <-m.wake:
		case <-ctx.Done():
			return fmt.Errorf("lease: %d partitions not released within evaluator.lease.shutdown_timeout %s", n, m.cfg.ShutdownTimeout)
		}
	}
}

// watch pokes the loop when the bucket shows a lease released or expired,
// or a member joining, settling or leaving. It only speeds things up: every
// decision is taken on a fresh read.
func (m *Manager) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := m.kv.WatchAll(ctx, jetstream.UpdatesOnly())
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.cfg.Renew):
				continue
			}
		}
		m.follow(ctx, w)
		stopWatcher(w)
	}
}

func (m *Manager) follow(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil && m.relevant(e) {
				m.poke()
			}
		}
	}
}

func (m *Manager) relevant(e jetstream.KeyValueEntry) bool {
	if e.Operation() != jetstream.KeyValuePut {
		return true
	}
	name, ok := strings.CutPrefix(e.Key(), memberPrefix)
	if !ok {
		return false
	}
	r, err := decodeRecord(e.Value())
	joining := err == nil && r.Joining
	m.mu.Lock()
	defer m.mu.Unlock()
	was, known := m.joining[name]
	return !known || was != joining
}
