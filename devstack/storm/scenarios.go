package storm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// dropAndReturn drops the devices of seq in order (keepalive_timeout, the
// usual "device died" signal) and brings each back lag drops later; a
// device may appear in seq again once it is back.
func (f *fleet) dropAndReturn(ctx context.Context, seq []int, lag int) error {
	for k := 0; k < len(seq)+lag; k++ {
		if k < len(seq) {
			i := seq[k]
			if err := f.disconnect(ctx, i, f.node[i], f.connAt[i], string(events.ReasonKeepaliveTimeout)); err != nil {
				return err
			}
		}
		if j := k - lag; j >= 0 {
			if err := f.connect(ctx, seq[j], f.node[seq[j]]); err != nil {
				return err
			}
		}
	}
	return nil
}

// reconnectStorm: every device drops and returns Lag drops later (well
// within the grace), sites interleaved. No alert may be decided.
func (f *fleet) reconnectStorm(ctx context.Context) error {
	seq := make([]int, len(f.ids))
	for i := range seq {
		seq[i] = i
	}
	return f.dropAndReturn(ctx, seq, min(f.cfg.Lag, len(seq)))
}

// siteOutage: every device of site 0 (a switch or the site's uplink)
// drops and stays down. Each must reach every receiver, nothing else may.
func (f *fleet) siteOutage(ctx context.Context, expected map[string]bool) error {
	for i := range f.ids {
		if f.site[i] != 0 {
			continue
		}
		expected[f.ids[i]] = true
		if err := f.disconnect(ctx, i, f.node[i], f.connAt[i], string(events.ReasonKeepaliveTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// flapping: one device in 20 of every site drops and returns FlapCycles
// times, each time well within the grace: no device_offline alert (a
// device_flapping one once its penalty crosses the suppress limit). Then
// one flapper in 10 drops for good and must be notified (once it calmed
// down, if it was flapping).
func (f *fleet) flapping(ctx context.Context, expected map[string]bool) error {
	var flappers []int
	for i := range f.ids {
		if f.nth(i)%20 == 1 {
			flappers = append(flappers, i)
		}
	}
	seq := make([]int, 0, len(flappers)*f.cfg.FlapCycles)
	for range f.cfg.FlapCycles {
		seq = append(seq, flappers...)
	}
	// A device returns before its next drop: lag below the flapper count.
	if err := f.dropAndReturn(ctx, seq, max(1, min(f.cfg.Lag, len(flappers)-1))); err != nil {
		return err
	}
	for k, i := range flappers {
		if k%10 != 0 {
			continue
		}
		expected[f.ids[i]] = true
		if err := f.disconnect(ctx, i, f.node[i], f.connAt[i], string(events.ReasonKeepaliveTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// takeovers: every device reconnects to the second broker node, which
// takes its session over; the old node's disconnected(takenover) arrives
// after the new connected (Lag devices later), as EMQX does not guarantee
// the order across nodes. No alert may follow. Then one device in 10 dies
// on the new node for good and must be notified (the new connection is
// the one tracked), one in 10 of every site: no site is in a mass outage.
func (f *fleet) takeovers(ctx context.Context, expected map[string]bool) error {
	n := len(f.ids)
	oldConn, oldNode := make([]int64, n), make([]string, n)
	lag := min(f.cfg.Lag, n)
	for k := 0; k < n+lag; k++ {
		if k < n {
			oldConn[k], oldNode[k] = f.connAt[k], f.node[k]
			if err := f.connect(ctx, k, f.node2); err != nil {
				return err
			}
		}
		if j := k - lag; j >= 0 {
			if err := f.disconnect(ctx, j, oldNode[j], oldConn[j], string(events.ReasonTakenOver)); err != nil {
				return err
			}
		}
	}
	for i := range f.ids {
		if f.nth(i)%10 != 3 {
			continue
		}
		expected[f.ids[i]] = true
		if err := f.disconnect(ctx, i, f.node[i], f.connAt[i], string(events.ReasonKeepaliveTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// pahoConnect connects the real MQTT devices (their $SYS events come from
// the broker itself), workers at a time.
func (f *fleet) pahoConnect(ctx context.Context) error {
	const workers = 32
	errs := make(chan error, workers)
	next := make(chan int)
	var wg sync.WaitGroup
	var lateMu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				d := f.paho[k]
				// A killed session may still be closing at the broker:
				// wait for it, or the connect is a takeover.
				for f.st.Broker().IsConnected(d.ID()) && ctx.Err() == nil {
					time.Sleep(time.Millisecond)
				}
				if err := d.Connect(); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
				// The broker's drop-to-return gap is at most kill to
				// CONNACK: past the grace, an alert is right.
				if k < len(f.killed) && time.Since(f.killed[k]) >= f.cfg.Grace {
					lateMu.Lock()
					f.late[d.ID()] = true
					lateMu.Unlock()
				}
			}
		}()
	}
	for k := range f.paho {
		f.total++
		f.published++
		next <- k
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// pahoStorm cuts every real device's socket (the broker reports it
// disconnected) and reconnects them all at once, as after a network blip.
func (f *fleet) pahoStorm(ctx context.Context) error {
	f.killed = make([]time.Time, len(f.paho))
	for k, d := range f.paho {
		f.killed[k] = time.Now()
		if err := d.Kill(); err != nil {
			return fmt.Errorf("device %s: %w", d.ID(), err)
		}
		f.total++
		f.published++
	}
	return f.pahoConnect(ctx)
}

// nodeSilent: node 2 (one device in 10 of every site lives on it) says its last words —
// one of its devices in 10 drops (keepalive_timeout) and stays down — and
// falls silent: no heartbeat, no event. Ingest reports it silent; the
// evaluator sends one node_silent alert per receiver, and holds the grace
// of the last words, which ends while the node is silent: no device_offline
// alert for its devices. Then its heartbeat returns: node_silent resolves
// and the held timers run — the devices that dropped fire then. The
// devices of node 2 that said nothing stay online: never alerted.
func (f *fleet) nodeSilent(ctx context.Context, expected map[string]bool) error {
	k := 0
	for i := range f.ids {
		if f.node[i] != f.node2 {
			continue
		}
		if k++; k%10 != 1 {
			continue
		}
		expected[f.ids[i]] = true
		if err := f.disconnect(ctx, i, f.node2, f.connAt[i], string(events.ReasonKeepaliveTimeout)); err != nil {
			return err
		}
	}
	f.heartbeats.Store(false)
	// Everything published must be in PRESENCE before the silence counts.
	if err := f.waitStored(ctx, f.total, f.cfg.Timeout); err != nil {
		return err
	}
	silent, err := f.waitNode(ctx, f.node2, events.NodeSilent)
	if err != nil {
		return err
	}
	f.silentAt = silent.AtMS
	fmt.Fprintf(f.cfg.Progress, "storm: node-silent: %s reported silent after %s without a sign of life\n",
		f.node2, time.Duration(silent.AtMS-silent.LastSeenMS)*time.Millisecond)
	// Let the grace of the last words pass while the node is silent, and
	// the node_silent alerts reach the chat.
	if err := f.settle(ctx, f.cfg.Timeout, f.lastEvent.Add(f.cfg.Grace+3*f.cfg.Tick)); err != nil {
		return err
	}
	f.heartbeats.Store(true)
	back, err := f.waitNode(ctx, f.node2, events.NodeBack)
	if err != nil {
		return err
	}
	f.backAt = back.AtMS
	fmt.Fprintf(f.cfg.Progress, "storm: node-silent: %s back\n", f.node2)
	return nil
}

// waitNode waits until the NODES stream's last event of node has status.
func (f *fleet) waitNode(ctx context.Context, node string, status events.NodeStatus) (events.NodeEvent, error) {
	var ev events.NodeEvent
	err := waitFor(ctx, f.cfg.Timeout, fmt.Sprintf("node %s %s in NODES", node, status), func() (bool, error) {
		s, err := f.js.Stream(ctx, events.StreamNodes)
		if err != nil {
			return false, err
		}
		m, err := s.GetLastMsgForSubject(ctx, events.NodeSubject(node))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			return false, fmt.Errorf("NODES: %w", err)
		}
		return ev.Status == status, nil
	})
	return ev, err
}
