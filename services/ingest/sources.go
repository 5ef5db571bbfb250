package ingest

import (
	"errors"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/awsiot"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
	"github.com/fleetwatch/fleetwatch/services/ingest/sparkplug"
)

// Sources named in dead letters (Fleetwatch-Source) and metrics.
const (
	// SourceEMQXSys is EMQX's $SYS presence.
	SourceEMQXSys = "emqx_sys"
	// SourceEMQXRule is EMQX rule-engine events republished over MQTT.
	SourceEMQXRule = "emqx_rule"
	// SourceAWSIoT is AWS IoT Core lifecycle events.
	SourceAWSIoT = events.SourceAWSIoT
	// SourceLastWill is the Last-Will/birth status convention.
	SourceLastWill = "last_will"
	// SourceSparkplug is Sparkplug B edge nodes' NBIRTH / NDEATH.
	SourceSparkplug = events.SourceSparkplug
	// SourceEMQXWebhook is the HTTP endpoint (v4 web hook, v5 HTTP action).
	SourceEMQXWebhook = "emqx_webhook"
	// SourceUnrouted is an MQTT message whose topic no source claims (a
	// filter of the persistent session from an earlier configuration).
	SourceUnrouted = "mqtt"
)

// errIgnored marks inputs that are well-formed but carry no presence
// (EMQX's subscribed events, a cleared retained status, …): counted as
// ignored and acknowledged, never dead-lettered.
var errIgnored = errors.New("not presence")

// input is one message from any transport.
type input struct {
	source   string // one of the Source* constants
	topic    string // MQTT topic or HTTP path
	payload  []byte
	retained bool
}

// parseFunc turns an input into an event; errors wrapping errIgnored are
// not dead-lettered.
type parseFunc func(in input, received time.Time) (events.PresenceEvent, error)

// route is one MQTT source: the filters it subscribes and its parser.
type route struct {
	source    string
	filters   []string
	parse     parseFunc
	heartbeat bool // health topics: no event, only a sign of life
	shared    bool // subscribed through the shared group when one is set
	emqxNode  bool // events name an EMQX node (tracked by health)
}

// routes lists the enabled MQTT sources in dispatch order. lw and sp may
// be nil when only the filters are needed.
func (c Config) routes(lw *lastwill.Parser, sp *sparkplug.Parser) []route {
	var out []route
	if c.Health.Enabled {
		// Not shared: every replica must hear every heartbeat, or a
		// round-robin group would make each replica see nodes as silent.
		out = append(out, route{source: "health", filters: c.Health.Topics, heartbeat: true})
	}
	if c.Sys.Enabled {
		out = append(out, route{source: SourceEMQXSys, filters: c.MQTT.Topics, shared: true, emqxNode: true,
			parse: func(in input, rcv time.Time) (events.PresenceEvent, error) {
				ev, err := emqx.ParseSys(in.topic, in.payload, rcv)
				return ev, ignoring(err, emqx.ErrNotPresence)
			}})
	}
	if c.AWSIoT.Enabled {
		node := c.AWSIoT.Node
		out = append(out, route{source: SourceAWSIoT, filters: c.AWSIoT.Topics, shared: true,
			parse: func(in input, rcv time.Time) (events.PresenceEvent, error) {
				return awsiot.Parse(in.topic, in.payload, node, rcv)
			}})
	}
	if c.Rule.Enabled {
		out = append(out, route{source: SourceEMQXRule, filters: c.Rule.Topics, shared: true, emqxNode: true,
			parse: func(in input, rcv time.Time) (events.PresenceEvent, error) {
				ev, err := emqx.ParseRule(in.payload, rcv)
				return ev, ignoring(err, emqx.ErrNotPresence)
			}})
	}
	if c.LastWill.Enabled {
		r := route{source: SourceLastWill, filters: []string{c.LastWill.Filter()}, shared: true}
		if lw != nil {
			r.parse = func(in input, rcv time.Time) (events.PresenceEvent, error) {
				ev, err := lw.Parse(in.topic, in.payload, in.retained, rcv)
				return ev, ignoring(err, lastwill.ErrNotPresence)
			}
		}
		out = append(out, r)
	}
	if c.Sparkplug.Enabled {
		r := route{source: SourceSparkplug, filters: c.Sparkplug.Topics, shared: true}
		if sp != nil {
			r.parse = func(in input, rcv time.Time) (events.PresenceEvent, error) {
				ev, err := sp.Parse(in.topic, in.payload, rcv)
				return ev, ignoring(err, sparkplug.ErrNotPresence)
			}
		}
		out = append(out, r)
	}
	return out
}

// ignoring marks err as errIgnored when it wraps sentinel.
func ignoring(err, sentinel error) error {
	if err != nil && errors.Is(err, sentinel) {
		return &ignoredError{err}
	}
	return err
}

// ignoredError keeps the parser's text and wraps errIgnored too.
type ignoredError struct{ err error }

func (e *ignoredError) Error() string   { return e.err.Error() }
func (e *ignoredError) Unwrap() []error { return []error{errIgnored, e.err} }

// match returns the route of topic, nil when none claims it.
func match(routes []route, topic string) *route {
	for i := range routes {
		for _, f := range routes[i].filters {
			if topicMatches(f, topic) {
				return &routes[i]
			}
		}
	}
	return nil
}

// topicMatches applies MQTT filter matching, including the rule that a
// filter starting with a wildcard does not match a topic starting with '$'.
func topicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// heartbeatNode returns the node of an EMQX heartbeat topic
// ($SYS/brokers/<node>/…), else the whole topic.
func heartbeatNode(topic string) string {
	if rest, ok := strings.CutPrefix(topic, "$SYS/brokers/"); ok {
		if n, _, ok := strings.Cut(rest, "/"); ok && n != "" {
			return n
		}
	}
	return topic
}
