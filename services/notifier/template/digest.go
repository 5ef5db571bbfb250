package template

import (
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
)

// DigestData is what the digest templates see.
type DigestData struct {
	// Alerts, FiringAlerts and ResolvedAlerts count the folded notifications.
	Alerts, FiringAlerts, ResolvedAlerts int
	// Firing and Resolved count the devices they cover; Total is both.
	Firing, Resolved, Total int
	// Kinds count the folded notifications by alert kind, most first.
	Kinds []DigestKind
	// Severity is the highest severity, as a word in the language.
	Severity string
	// From and To bound the alerts' times.
	From, To string
	// Groups are the top groups; MoreGroups the rest.
	Groups     []DigestGroup
	MoreGroups int
	// Devices are the sample devices listed; Omitted the devices covered
	// but not listed (Total - len(Devices)).
	Devices []DigestDevice
	Omitted int
	// ShortID is the start of the digest id.
	ShortID string
}

// DigestKind is the number of folded notifications of one kind.
type DigestKind struct {
	// Name is the kind in the language ("批量离线", "Group outage").
	Name   string
	Alerts int
}

// DigestGroup is one listed group.
type DigestGroup struct {
	Name             string
	Firing, Resolved int
}

// DigestDevice is one listed device, ready to print.
type DigestDevice struct {
	ID, Status, Group, Node, Reason, Since string
	Firing                                 bool
}

// RenderDigest renders a digest within fits (see Render): the sample
// device list is shortened first, then the text is cut.
func (t *Template) RenderDigest(d digest.Digest, fits func(Message) bool) (Message, error) {
	w := words[t.opts.Language]
	base := DigestData{
		Alerts: d.Alerts(), FiringAlerts: d.FiringAlerts, ResolvedAlerts: d.ResolvedAlerts,
		Firing: d.FiringDevices, Resolved: d.ResolvedDevices, Total: d.Devices(),
		Severity:   lookup(w.severities, string(d.Severity)),
		From:       t.clock(d.FromMS, "01-02 15:04:05"),
		To:         t.clock(d.ToMS, "01-02 15:04:05"),
		MoreGroups: d.MoreGroups,
		ShortID:    d.ID[:min(len(d.ID), 12)],
	}
	for _, k := range d.Kinds {
		base.Kinds = append(base.Kinds, DigestKind{Name: text(lookup(w.kinds, string(k.Kind)), maxShortRunes), Alerts: k.Alerts})
	}
	for _, g := range d.Groups {
		base.Groups = append(base.Groups, DigestGroup{Name: text(g.Name, maxGroupRunes), Firing: g.Firing, Resolved: g.Resolved})
	}
	all := make([]DigestDevice, 0, len(d.Samples))
	for _, s := range d.Samples {
		v := DigestDevice{
			ID: text(s.DeviceID, maxDeviceIDRunes), Firing: s.Status == events.StatusFiring,
			Status: lookup(w.statuses, string(s.Status)), Group: text(s.Group, maxGroupRunes),
			Node: text(s.Node, maxShortRunes), Reason: text(lookup(w.reasons, string(s.Reason)), maxShortRunes),
		}
		if s.SinceMS > 0 {
			v.Since = t.clock(s.SinceMS, "01-02 15:04:05")
		}
		all = append(all, v)
	}
	links := t.links(t.viewURL("alerts"), "")
	if len(links) > 0 {
		links[0].Title = w.viewAlerts
	}
	return t.fit(len(all), func(n int) (Message, error) {
		data := base
		data.Devices = all[:n]
		data.Omitted = max(base.Total-n, 0)
		m, err := t.message("digest_title", "digest_body", data)
		m.Shown, m.Omitted = n, data.Omitted
		m.Firing, m.Severity, m.Links = d.FiringAlerts > 0, d.Severity, links
		return m, err
	}, fits)
}

// TestData is what the test message templates see.
type TestData struct {
	// Receiver is the receiver's name.
	Receiver string
	// At is the time the message was rendered.
	At string
}

// RenderTest renders the message `fleetwatch-notifier test` sends: it
// carries the keyword envelope like every other message.
func (t *Template) RenderTest(receiver string, at time.Time, fits func(Message) bool) (Message, error) {
	data := TestData{Receiver: text(receiver, maxShortRunes), At: at.In(t.opts.Location).Format("2006-01-02 15:04:05 -07:00")}
	var links []Link
	if home := t.viewURL(); home != "" {
		links = []Link{{Title: words[t.opts.Language].viewHome, URL: home}}
	}
	return t.fit(0, func(int) (Message, error) {
		m, err := t.message("test_title", "test_body", data)
		m.Severity, m.Links = events.SeverityInfo, links
		return m, err
	}, fits)
}
