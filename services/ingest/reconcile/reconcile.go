package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Source is reported in corrective events.
const Source = "emqx_api"

// RawReasonAbsent is the raw reason of a corrective disconnect for a device
// the broker no longer knows at all (no channel, no session).
const RawReasonAbsent = "absent_from_broker"

// emqxSource reports whether an event came from EMQX (the API can only
// speak for EMQX's devices, not AWS IoT or last-will ones).
func emqxSource(s string) bool {
	return strings.HasPrefix(s, "emqx_")
}

// Decide compares one broker row with the last stored event of its device
// and returns the corrective event to emit, if the two disagree. The
// corrective event is what EMQX would have reported for that connection, so
// its id equals the missed event's id when it was stored after all:
//
//   - the broker has the device connected (node, connected_at) but the last
//     event is not that connection, nor a later one → connected;
//   - the broker keeps a disconnected session (disconnected_at) whose
//     connection is the last stored event, still connected → disconnected
//     with the broker's disconnected_at and reason "other" (the REST API
//     does not say why).
//
// A last event of a newer connection, or of the same connection and
// already disconnected, wins over the API (the API snapshot can be older
// than the events). Devices whose last event is not from EMQX are skipped.
func Decide(c Client, last events.PresenceEvent, hasLast bool, now time.Time) (events.PresenceEvent, bool, error) {
	if hasLast && !emqxSource(last.Source) {
		return events.PresenceEvent{}, false, nil
	}
	base := events.PresenceEvent{DeviceID: c.ClientID, Node: c.Node, Username: c.Username, IP: c.IP,
		ProtoVer: c.ProtoVer, Source: Source, ReceivedAtMS: now.UnixMilli(), ConnectedAtMS: c.ConnectedAtMS}
	switch {
	case c.Node == "" || c.ConnectedAtMS == 0:
		return events.PresenceEvent{}, false, nil // nothing to key a connection by
	case c.Connected:
		if hasLast && (last.ConnectedAtMS > c.ConnectedAtMS ||
			(last.ConnectedAtMS == c.ConnectedAtMS && last.Node == c.Node) ||
			(last.ConnectedAtMS == 0 && last.BrokerTSMS > c.ConnectedAtMS)) {
			return events.PresenceEvent{}, false, nil
		}
		base.Kind, base.BrokerTSMS, base.KeepaliveS = events.KindConnected, c.ConnectedAtMS, c.KeepaliveS
	default:
		if c.DisconnectedAtMS == 0 || !hasLast || last.Kind != events.KindConnected ||
			last.ConnectedAtMS != c.ConnectedAtMS || last.Node != c.Node {
			return events.PresenceEvent{}, false, nil
		}
		base.Kind, base.BrokerTSMS, base.Reason = events.KindDisconnected, c.DisconnectedAtMS, events.ReasonOther
	}
	ev, err := events.NewPresenceEvent(base)
	if err != nil {
		return events.PresenceEvent{}, false, fmt.Errorf("corrective event for %q: %w", c.ClientID, err)
	}
	return ev, true, nil
}

// DecideAbsent handles a device whose last stored event says connected but
// that the broker does not know at all (confirmed with GET
// /api/v5/clients/{id}): its connection ended unreported (a node crash, a
// forced kill). The disconnect ends that connection (same node and
// connected_at) at now, the only time there is, with raw reason
// absent_from_broker. listedFrom is when the listing began: events stored
// since may be newer than what the broker was asked about and are left
// alone.
func DecideAbsent(last events.PresenceEvent, listedFrom, now time.Time) (events.PresenceEvent, bool, error) {
	if last.Kind != events.KindConnected || !emqxSource(last.Source) && last.Source != Source ||
		last.ReceivedAtMS >= listedFrom.UnixMilli() {
		return events.PresenceEvent{}, false, nil
	}
	ev, err := events.NewPresenceEvent(events.PresenceEvent{DeviceID: last.DeviceID, Kind: events.KindDisconnected,
		Node: last.Node, BrokerTSMS: now.UnixMilli(), ConnectedAtMS: last.ConnectedAtMS,
		RawReason: RawReasonAbsent, Reason: events.ReasonOther, Username: last.Username, IP: last.IP,
		Protocol: last.Protocol, ProtoVer: last.ProtoVer, Source: Source, ReceivedAtMS: now.UnixMilli()})
	if err != nil {
		return events.PresenceEvent{}, false, fmt.Errorf("corrective event for %q: %w", last.DeviceID, err)
	}
	return ev, true, nil
}

// Lister is the broker's side (API implements it).
type Lister interface {
	Page(ctx context.Context, page, limit int) ([]Client, bool, error)
	Get(ctx context.Context, clientID string) (Client, error)
}

// Store is fleetwatch's side: the last stored event of a device, and
// storing a corrective one.
type Store interface {
	Last(ctx context.Context, deviceID string) (events.PresenceEvent, bool, error)
	Publish(ctx context.Context, ev events.PresenceEvent) error
}

// Report counts what one pass did.
type Report struct {
	Listed       int // rows read from the API
	Connected    int // corrective connects emitted
	Disconnected int // corrective disconnects emitted (session kept)
	Absent       int // corrective disconnects for devices the broker does not know
}

// Reconciler runs passes.
type Reconciler struct {
	Lister    Lister
	Store     Store
	PageLimit int
	// Online returns the devices this process believes connected (the
	// candidates for absence); nil skips the absence check.
	Online func() []string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Run does one pass: every page of the client list, then the absence check
// of Online devices the listing did not contain. It stops at the first
// error (the next pass starts over).
func (r *Reconciler) Run(ctx context.Context) (Report, error) {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	var rep Report
	started := now()
	listed := map[string]bool{}
	for page := 1; ; page++ {
		rows, hasNext, err := r.Lister.Page(ctx, page, r.PageLimit)
		if err != nil {
			return rep, err
		}
		for _, c := range rows {
			rep.Listed++
			listed[c.ClientID] = true
			if err := r.one(ctx, c, now, &rep); err != nil {
				return rep, err
			}
		}
		if !hasNext || len(rows) == 0 {
			break
		}
	}
	if r.Online == nil {
		return rep, nil
	}
	for _, id := range r.Online() {
		if listed[id] {
			continue
		}
		// Pages shift while clients come and go: confirm before correcting.
		c, err := r.Lister.Get(ctx, id)
		switch {
		case err == nil:
			if err := r.one(ctx, c, now, &rep); err != nil {
				return rep, err
			}
			continue
		case !errors.Is(err, ErrNotFound):
			return rep, err
		}
		last, ok, err := r.Store.Last(ctx, id)
		if err != nil || !ok {
			return rep, err
		}
		ev, emit, err := DecideAbsent(last, started, now())
		if err != nil || !emit {
			if err != nil {
				return rep, err
			}
			continue
		}
		if err := r.Store.Publish(ctx, ev); err != nil {
			return rep, err
		}
		rep.Absent++
	}
	return rep, nil
}

func (r *Reconciler) one(ctx context.Context, c Client, now func() time.Time, rep *Report) error {
	last, ok, err := r.Store.Last(ctx, c.ClientID)
	if err != nil {
		return err
	}
	ev, emit, err := Decide(c, last, ok, now())
	if err != nil || !emit {
		return err
	}
	if err := r.Store.Publish(ctx, ev); err != nil {
		return err
	}
	if ev.Kind == events.KindConnected {
		rep.Connected++
	} else {
		rep.Disconnected++
	}
	return nil
}
