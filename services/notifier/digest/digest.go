// Package digest folds the pending notifications of one receiver into one
// summary: how many alerts and devices are firing and resolved, the groups
// with the most devices, and a sample of devices. The notifier sends a
// digest instead of one message per alert when the receiver's rate budget
// is short (a storm), so every alert is accounted for in a message that
// fits the remote's limits. Folding is pure: no clock, no I/O.
package digest

import (
	"sort"
	"strings"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Options tune a fold.
type Options struct {
	// GroupBy are the label names that make a group, looked up in each
	// device's labels, then in the alert's group labels (e.g. [site]).
	// Without a match the alert's group labels (less device_id) are the
	// group, then the device's broker node.
	GroupBy []string
	// TopGroups bounds the groups listed (default 5).
	TopGroups int
	// Samples bounds the devices listed (default 50); the message
	// template may list fewer to fit its byte budget.
	Samples int
}

// Default bounds.
const (
	DefaultTopGroups = 5
	DefaultSamples   = 50
)

// Digest summarises a set of alerts for one receiver.
type Digest struct {
	// ID is derived from the receiver and the folded alert ids: the same
	// set always has the same id (DingTalk's msgUuid on a retry).
	ID string
	// Receiver is the receiver the alerts are for.
	Receiver string
	// AlertIDs are the folded alert ids, sorted.
	AlertIDs []string
	// FiringAlerts and ResolvedAlerts count the folded alerts by status.
	FiringAlerts, ResolvedAlerts int
	// FiringDevices and ResolvedDevices count the devices they report
	// down and back up, listed or not: DevicesTotal by the alert's status,
	// or, for a group notification that counts its devices (NewTotal,
	// ResolvedTotal, FiringTotal), new and still offline as firing and
	// recovered as resolved.
	FiringDevices, ResolvedDevices int
	// Kinds count the folded alerts by kind, most first (then by name).
	Kinds []KindCount
	// Severity is the highest severity of the firing alerts (of all
	// alerts when none fires).
	Severity events.Severity
	// FromMS is the earliest start and ToMS the latest start, end or
	// creation among the alerts.
	FromMS, ToMS int64
	// Groups are the TopGroups groups with the most devices, most first.
	Groups []Group
	// MoreGroups counts the groups not listed.
	MoreGroups int
	// Samples are up to Samples devices, firing ones first, in the order
	// the alerts were folded.
	Samples []Sample
}

// Alerts is the number of folded alerts.
func (d Digest) Alerts() int { return d.FiringAlerts + d.ResolvedAlerts }

// Devices is the number of devices covered, firing plus resolved.
func (d Digest) Devices() int { return d.FiringDevices + d.ResolvedDevices }

// KindCount is the number of folded alerts of one kind.
type KindCount struct {
	Kind   events.AlertKind `json:"kind"`
	Alerts int              `json:"alerts"`
}

// Group is one group's device counts.
type Group struct {
	// Name renders the group's labels ("site=sh-01") or its node.
	Name string `json:"name"`
	// Firing and Resolved count its devices by alert status.
	Firing   int `json:"firing"`
	Resolved int `json:"resolved"`
}

// Sample is one listed device.
type Sample struct {
	DeviceID string             `json:"device_id"`
	Status   events.AlertStatus `json:"status"`
	Group    string             `json:"group"`
	Node     string             `json:"node,omitempty"`
	Reason   events.Reason      `json:"reason,omitempty"`
	SinceMS  int64              `json:"since_ms,omitempty"`
	UntilMS  int64              `json:"until_ms,omitempty"`
}

var rank = map[events.Severity]int{events.SeverityInfo: 1, events.SeverityWarning: 2, events.SeverityCritical: 3}

// Fold summarises alerts (all for receiver) in the given order.
func Fold(receiver string, alerts []events.AlertEvent, opts Options) Digest {
	if opts.TopGroups <= 0 {
		opts.TopGroups = DefaultTopGroups
	}
	if opts.Samples <= 0 {
		opts.Samples = DefaultSamples
	}
	d := Digest{Receiver: receiver}
	groups := map[string]*Group{}
	count := func(name string, status events.AlertStatus, n int) {
		g := groups[name]
		if g == nil {
			g = &Group{Name: name}
			groups[name] = g
		}
		if status == events.StatusFiring {
			g.Firing += n
		} else {
			g.Resolved += n
		}
	}
	var firingSev, anySev events.Severity
	var resolved []Sample
	kinds := map[events.AlertKind]int{}
	for _, a := range alerts {
		d.AlertIDs = append(d.AlertIDs, a.ID)
		kinds[a.Kind]++
		down, up := split(a)
		d.FiringDevices += down
		d.ResolvedDevices += up
		if a.Status == events.StatusFiring {
			d.FiringAlerts++
			if rank[a.Severity] > rank[firingSev] {
				firingSev = a.Severity
			}
		} else {
			d.ResolvedAlerts++
		}
		if rank[a.Severity] > rank[anySev] {
			anySev = a.Severity
		}
		if d.FromMS == 0 || (a.StartsAtMS > 0 && a.StartsAtMS < d.FromMS) {
			d.FromMS = a.StartsAtMS
		}
		d.ToMS = max(d.ToMS, a.StartsAtMS, a.EndsAtMS, a.CreatedAtMS)
		for _, dev := range a.Devices {
			st := deviceStatus(a, dev)
			if st == events.StatusFiring {
				down--
			} else {
				up--
			}
			g := groupOf(opts.GroupBy, a, dev)
			count(g, st, 1)
			s := Sample{DeviceID: dev.DeviceID, Status: st, Group: g, Node: dev.Node, Reason: dev.Reason,
				SinceMS: dev.SinceMS, UntilMS: dev.UntilMS}
			if st == events.StatusResolved && s.UntilMS == 0 {
				s.UntilMS = a.EndsAtMS
			}
			switch {
			case st == events.StatusFiring && len(d.Samples) < opts.Samples:
				d.Samples = append(d.Samples, s)
			case st == events.StatusResolved && len(resolved) < opts.Samples:
				resolved = append(resolved, s)
			}
		}
		// The devices not listed, by what the counts leave.
		if down > 0 {
			count(groupOf(opts.GroupBy, a, events.AlertDevice{}), events.StatusFiring, down)
		}
		if up > 0 {
			count(groupOf(opts.GroupBy, a, events.AlertDevice{}), events.StatusResolved, up)
		}
	}
	for k, n := range kinds {
		d.Kinds = append(d.Kinds, KindCount{Kind: k, Alerts: n})
	}
	sort.Slice(d.Kinds, func(i, j int) bool {
		if d.Kinds[i].Alerts != d.Kinds[j].Alerts {
			return d.Kinds[i].Alerts > d.Kinds[j].Alerts
		}
		return d.Kinds[i].Kind < d.Kinds[j].Kind
	})
	d.Samples = append(d.Samples, resolved[:min(len(resolved), opts.Samples-len(d.Samples))]...)
	d.Severity = firingSev
	if d.Severity == "" {
		d.Severity = anySev
	}
	all := make([]Group, 0, len(groups))
	for _, g := range groups {
		all = append(all, *g)
	}
	sort.Slice(all, func(i, j int) bool {
		if ni, nj := all[i].Firing+all[i].Resolved, all[j].Firing+all[j].Resolved; ni != nj {
			return ni > nj
		}
		return all[i].Name < all[j].Name
	})
	d.Groups = all[:min(len(all), opts.TopGroups)]
	d.MoreGroups = len(all) - len(d.Groups)
	sort.Strings(d.AlertIDs)
	d.ID = ID(receiver, d.AlertIDs)
	return d
}

// split returns how many devices a reports down and back up: by its
// status, or by its counts when it is a firing group notification that
// has them (a resolved one reports every device back up).
func split(a events.AlertEvent) (down, up int) {
	total := max(a.DevicesTotal, len(a.Devices))
	switch {
	case a.Status != events.StatusFiring:
		return 0, total
	case a.NewTotal+a.ResolvedTotal+a.FiringTotal > 0:
		return max(a.NewTotal, 0) + max(a.FiringTotal, 0), max(a.ResolvedTotal, 0)
	}
	return total, 0
}

// deviceStatus is a listed device's own status, else its alert's; in a
// resolved alert every device is back.
func deviceStatus(a events.AlertEvent, dev events.AlertDevice) events.AlertStatus {
	if a.Status == events.StatusResolved || dev.Status == events.StatusResolved {
		return events.StatusResolved
	}
	if dev.Status == events.StatusFiring {
		return events.StatusFiring
	}
	return a.Status
}

// ID derives a digest id from the receiver and the sorted alert ids.
func ID(receiver string, sortedIDs []string) string {
	return events.ContentID(append([]string{"digest.v1", receiver}, sortedIDs...)...)
}

// groupOf names the group of one device of a (a zero device: the alert's
// devices that are not listed).
func groupOf(by []string, a events.AlertEvent, dev events.AlertDevice) string {
	var parts []string
	for _, k := range by {
		v, ok := dev.Labels[k]
		if !ok {
			v, ok = a.GroupLabels[k]
		}
		if ok {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) > 0 {
		return strings.Join(parts, ", ")
	}
	keys := make([]string, 0, len(a.GroupLabels))
	for k := range a.GroupLabels {
		if k != "device_id" {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, k+"="+a.GroupLabels[k])
		}
		return strings.Join(parts, ", ")
	}
	if dev.Node != "" {
		return "node=" + dev.Node
	}
	if len(a.Devices) > 0 && a.Devices[0].Node != "" {
		return "node=" + a.Devices[0].Node
	}
	return "-"
}
