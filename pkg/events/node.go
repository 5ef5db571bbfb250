package events

import "strconv"

// NodesPrefix is the subject prefix of broker node health events.
const NodesPrefix = "nodes.v1"

// NodeStatus says whether a broker node went silent or came back.
type NodeStatus string

// Node statuses.
const (
	// NodeSilent: no heartbeat or event from the node for longer than the
	// threshold; the presence of its devices is unknown.
	NodeSilent NodeStatus = "silent"
	// NodeBack: the node is heard from again after being silent.
	NodeBack NodeStatus = "back"
)

// NodeEvent reports a change in a broker node's health, as seen by ingest.
// Node health is global, not partitioned: every evaluator replica reads all
// of them.
type NodeEvent struct {
	// V is the schema version (1).
	V int `json:"v"`
	// ID is derived from node, status and Mark (else the last-seen time).
	ID string `json:"id"`
	// Node is the broker node name (e.g. emqx@10.0.0.11).
	Node string `json:"node"`
	// Status is silent or back.
	Status NodeStatus `json:"status"`
	// LastSeenMS is when the node was last heard from before this event
	// (for back: the time it was heard again).
	LastSeenMS int64 `json:"last_seen_ms"`
	// AtMS is when ingest decided (its clock).
	AtMS int64 `json:"at_ms"`
	// Source names what was watched, e.g. "emqx_sys_heartbeat".
	Source string `json:"source"`
	// Mark is the node's last heartbeat payload before the change (EMQX's
	// uptime), when known. Every ingest replica sees the same marks, so
	// the id derives from it rather than from LastSeenMS, which is each
	// replica's own receive time.
	Mark string `json:"mark,omitempty"`
}

// NewNodeEvent validates e, sets V and derives the ID.
func NewNodeEvent(e NodeEvent) (NodeEvent, error) {
	e.V = Version
	e.ID = nodeID(e)
	if err := e.Validate(); err != nil {
		return NodeEvent{}, err
	}
	return e, nil
}

func nodeID(e NodeEvent) string {
	if e.Mark != "" {
		return ContentID("node.v1", e.Node, string(e.Status), "mark", e.Mark)
	}
	return ContentID("node.v1", e.Node, string(e.Status), strconv.FormatInt(e.LastSeenMS, 10))
}

// Validate checks a node event read from the wire.
func (e NodeEvent) Validate() error {
	switch {
	case e.V != Version:
		return invalid("v is %d, want %d", e.V, Version)
	case e.Node == "":
		return invalid("node is empty")
	case e.Status != NodeSilent && e.Status != NodeBack:
		return invalid("status %q is neither silent nor back", e.Status)
	case e.LastSeenMS <= 0:
		return invalid("last_seen_ms %d is not a positive epoch-ms time", e.LastSeenMS)
	case e.AtMS <= 0:
		return invalid("at_ms %d is not a positive epoch-ms time", e.AtMS)
	case e.Source == "":
		return invalid("source is empty")
	case e.ID != nodeID(e):
		return invalid("id %q does not match the event content", e.ID)
	}
	return nil
}

// NodeSubject is the subject of a node's health events: nodes.v1.<encoded node>.
func NodeSubject(node string) string { return NodesPrefix + "." + EncodeToken(node) }

// Subject returns the event's subject.
func (e NodeEvent) Subject() string { return NodeSubject(e.Node) }
