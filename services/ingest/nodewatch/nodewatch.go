// Package nodewatch tracks the broker nodes ingest hears from (heartbeats
// such as EMQX's $SYS/brokers/<node>/uptime, or any event a node reports)
// and says when one falls silent past a threshold and when it comes back.
// It is pure and clock-injected: callers pass the time of every call, so it
// is tested with a fake clock and driven by a ticker in the service.
package nodewatch

import (
	"slices"
	"sync"
	"time"
)

// Kind is a node's change of health.
type Kind string

// Kinds of Change.
const (
	// KindSilent: nothing was heard from the node for the threshold; the
	// state of its devices is unknown from now on.
	KindSilent Kind = "silent"
	// KindBack: a silent node was heard again (devices' state should be
	// reconciled).
	KindBack Kind = "back"
)

// Change is one node going silent or coming back.
type Change struct {
	// Node is the broker node name.
	Node string
	// Kind is silent or back.
	Kind Kind
	// At is when the change was detected (the time passed to the call).
	At time.Time
	// LastHeard is when the node was last heard before going silent (for
	// KindSilent) or before this sign of life (for KindBack).
	LastHeard time.Time
	// Mark is the last heartbeat's payload (EMQX's uptime) before the
	// change: every replica subscribed to the heartbeat sees the same
	// marks, so it makes a change's id the same across replicas.
	Mark string
}

// Status is a node's current view.
type Status struct {
	Node      string
	LastHeard time.Time
	Silent    bool
	// Mark is the node's last heartbeat payload ("" when none was heard).
	Mark string
}

// Watcher tracks nodes. It is safe for concurrent use.
type Watcher struct {
	silentAfter time.Duration

	mu    sync.Mutex
	nodes map[string]*node
}

type node struct {
	lastHeard time.Time
	mark      string
	silent    bool
	// since, for a node known from before (Seed) and not heard since, is
	// when watching began: its silence counts from then, not from
	// lastHeard.
	since time.Time
}

// New returns a watcher for which a node is silent after silentAfter
// without a sign of life.
func New(silentAfter time.Duration) *Watcher {
	return &Watcher{silentAfter: silentAfter, nodes: map[string]*node{}}
}

// Heard records a sign of life of node at time at: a heartbeat (mark is its
// payload) or an event (mark ""). It returns the KindBack change when the
// node was silent. Signs older than the last one heard do not move time
// back.
func (w *Watcher) Heard(nodeName, mark string, at time.Time) (Change, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := w.nodes[nodeName]
	if !ok {
		w.nodes[nodeName] = &node{lastHeard: at, mark: mark}
		return Change{}, false
	}
	prev := n.lastHeard
	if at.After(n.lastHeard) {
		n.lastHeard = at
	}
	if mark != "" {
		n.mark = mark
	}
	if !n.silent {
		return Change{}, false
	}
	n.silent = false
	return Change{Node: nodeName, Kind: KindBack, At: at, LastHeard: prev, Mark: n.mark}, true
}

// Seed makes the watcher know a node from before it started (a previous
// run's record), as of now: unless it is heard within the threshold from
// now, it is reported silent, with lastHeard and mark as recorded; one
// recorded as silent is not reported again, and is reported back when
// heard. A node already heard is left as it is.
func (w *Watcher) Seed(nodeName string, lastHeard time.Time, mark string, silent bool, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.nodes[nodeName]; ok {
		return
	}
	w.nodes[nodeName] = &node{lastHeard: lastHeard, mark: mark, silent: silent, since: now}
}

// Hold says that ingest could not hear anyone at now: its pipeline was
// full, so the broker's messages (heartbeats among them) waited behind a
// backlog, or its broker connection was down. A silence counts only from
// the last Hold on: a stall of ingest itself is not a node's silence.
// Nodes already silent stay silent.
func (w *Watcher) Hold(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.nodes {
		if now.After(n.since) {
			n.since = now
		}
	}
}

// Check returns the nodes that fell silent since the last Check (each
// silence is reported once), in node order.
func (w *Watcher) Check(now time.Time) []Change {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Change
	for name, n := range w.nodes {
		if n.silent || now.Sub(n.lastHeard) < w.silentAfter || now.Sub(n.since) < w.silentAfter {
			continue
		}
		n.silent = true
		out = append(out, Change{Node: name, Kind: KindSilent, At: now, LastHeard: n.lastHeard, Mark: n.mark})
	}
	slices.SortFunc(out, func(a, b Change) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	return out
}

// Nodes returns every known node's status, in node order.
func (w *Watcher) Nodes() []Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Status, 0, len(w.nodes))
	for name, n := range w.nodes {
		out = append(out, Status{Node: name, LastHeard: n.lastHeard, Silent: n.silent, Mark: n.mark})
	}
	slices.SortFunc(out, func(a, b Status) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	return out
}
