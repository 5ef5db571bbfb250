// Package template renders an AlertEvent into a chat message (a title and
// a markdown body) with Go text/template, in Chinese or English. It owns two
// guarantees every channel relies on: the receiver's keyword is in every
// message kind (firing, resolved, any alert kind) through a fixed envelope
// around the title, and the message always fits the caller's byte budget:
// the device list is shortened with "+N more" / "另有 N 台" and, as a last
// resort, the text is cut — rendering never fails because of size.
package template

import (
	"bytes"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// Language selects the default templates.
type Language string

// Supported languages.
const (
	Chinese Language = "zh"
	English Language = "en"
)

// ParseLanguage accepts "zh", "en" or "" (Chinese).
func ParseLanguage(s string) (Language, error) {
	switch Language(s) {
	case "", Chinese:
		return Chinese, nil
	case English:
		return English, nil
	}
	return "", fmt.Errorf("language %q is not supported: use zh or en", s)
}

// Options configures a Template.
type Options struct {
	// Language of the default templates (default zh).
	Language Language
	// Keyword is the receiver's security keyword; the envelope puts it in
	// every title. Empty: no keyword.
	Keyword string
	// Location renders times (default time.Local).
	Location *time.Location
	// LinkBaseURL, when set, adds links to every message: the alert view
	// (LinkBaseURL/alerts/<fingerprint>), the device view
	// (LinkBaseURL/devices/<device id>) and the alert list (digests).
	LinkBaseURL string
}

// Note is what the notifier knows about an alert beyond the event itself.
type Note struct {
	// EscalatedFrom names the receiver whose alert stayed unresolved and
	// was escalated (the notifier's escalation chain); empty otherwise.
	EscalatedFrom string
	// EscalatedAfter is how long it had been unresolved.
	EscalatedAfter time.Duration
}

// Message is a rendered notification.
type Message struct {
	// Title is the envelope (with the keyword) around the rendered title.
	Title string
	// Body is markdown (the common subset of DingTalk markdown and lark_md).
	Body string
	// Shown is how many devices the body lists.
	Shown int
	// Omitted is how many devices the alert covers but the body does not list.
	Omitted int
	// Truncated reports that the body (or title) text itself had to be cut.
	Truncated bool
	// Firing is true when the message reports something firing (a digest
	// with at least one firing alert); channels colour by it.
	Firing bool
	// Severity is the alert's (the digest's highest) severity.
	Severity events.Severity
	// Links are the message's links (empty without a link base URL):
	// the alert or the alert list first, then a single device's view.
	Links []Link
}

// Link is one link of a message, for channels that show buttons.
type Link struct {
	// Title is the link's text in the message's language.
	Title string
	// URL is absolute.
	URL string
}

// Template renders alerts for one receiver.
type Template struct {
	opts Options
	t    *texttemplate.Template
}

// Field caps keep any one value from eating the budget.
const (
	maxDeviceIDRunes = 120
	maxShortRunes    = 64
	maxGroupLabels   = 6
	maxGroupRunes    = 200
)

// New builds the default templates for opts.
func New(opts Options) (*Template, error) {
	if opts.Language == "" {
		opts.Language = Chinese
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	src, ok := defaults[opts.Language]
	if !ok {
		return nil, fmt.Errorf("language %q is not supported: use zh or en", opts.Language)
	}
	t, err := texttemplate.New(string(opts.Language)).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("parse %s templates: %w", opts.Language, err)
	}
	for _, name := range []string{"title", "body", "digest_title", "digest_body", "test_title", "test_body"} {
		if t.Lookup(name) == nil {
			return nil, fmt.Errorf("%s templates: %q is not defined", opts.Language, name)
		}
	}
	return &Template{opts: opts, t: t}, nil
}

// Language is the template's language.
func (t *Template) Language() Language { return t.opts.Language }

// Envelope wraps a title with the keyword: "【告警】title" in Chinese,
// "[alert] title" in English, the title alone without a keyword.
func (t *Template) Envelope(title string) string {
	switch {
	case t.opts.Keyword == "":
		return title
	case t.opts.Language == Chinese:
		return "【" + t.opts.Keyword + "】" + title
	default:
		return "[" + t.opts.Keyword + "] " + title
	}
}

// Data is what the templates see.
type Data struct {
	// Firing is true for a firing alert, false for a resolved one.
	Firing bool
	// Kind, Severity and Status are the alert's, as names in the language.
	Kind, Severity, Status string
	// RawKind is the alert kind identifier (device_offline, …).
	RawKind string
	// Total is the number of devices the alert covers.
	Total int
	// New, Recovered and Still count a group notification's devices by
	// their status in it: newly offline, recovered, still offline (0 when
	// the evaluator did not count them). Update is true when the
	// notification reports recoveries or devices still down (not a first
	// notification), and Changes says it in words: "12 new offline, 3
	// recovered, 140 still down".
	New, Recovered, Still int
	Update                bool
	Changes               string
	// Known is, for a group_outage or node_silent alert, how many devices
	// the group or node has; Share is Total/Known as a percentage ("80%").
	Known int
	Share string
	// Flaps is a device_flapping alert's disconnect count.
	Flaps int
	// Node is the broker node of a node_silent alert.
	Node string
	// Tier is the evaluator's escalation tier (0: the first notification).
	Tier int
	// EscalatedFrom and EscalatedAfter describe an escalation by the
	// notifier's chain ("" when the alert was not escalated); Escalated
	// is true for either kind of escalation.
	EscalatedFrom, EscalatedAfter string
	Escalated                     bool
	// AlertURL and DeviceURL (one-device alerts) are the views' links,
	// empty without a link base URL.
	AlertURL, DeviceURL string
	// FirstID is the first device's id (for one-device titles), and
	// FirstOutage its outage once it is back (else the alert's Duration).
	FirstID, FirstOutage string
	// Group renders the group labels ("site=sh-01, gateway=gw-3").
	Group string
	// StartsAt, EndsAt and Duration describe the alert's time span.
	StartsAt, EndsAt, Duration string
	// Devices are the devices listed; Omitted the rest.
	Devices []Device
	Omitted int
	// ShortID is the start of the alert id.
	ShortID string
}

// Device is one listed device, ready to print.
type Device struct {
	ID, Node, Reason, Since, Until, Outage string
	// Recovered is true for a device back online (in a resolved alert, or
	// listed as recovered in a firing group notification).
	Recovered bool
}

// Render renders a for the receiver. fits reports whether a candidate
// message fits the channel's budget (the channel measures its whole
// request body); nil means anything fits. Render returns the fullest
// candidate that fits.
func (t *Template) Render(a events.AlertEvent, fits func(Message) bool) (Message, error) {
	return t.RenderNote(a, Note{}, fits)
}

// RenderNote is Render with what the notifier knows beyond the event
// (an escalation by its chain).
func (t *Template) RenderNote(a events.AlertEvent, note Note, fits func(Message) bool) (Message, error) {
	base := t.data(a, note)
	all := base.Devices
	links := t.links(base.AlertURL, base.DeviceURL)
	return t.fit(len(all), func(n int) (Message, error) {
		d := base
		d.Devices = all[:n]
		d.Omitted = base.Total - n
		m, err := t.message("title", "body", d)
		m.Shown, m.Omitted = n, d.Omitted
		m.Firing, m.Severity, m.Links = a.Status == events.StatusFiring, a.Severity, links
		return m, err
	}, fits)
}

// links lists the non-empty links, alert view first.
func (t *Template) links(alertURL, deviceURL string) []Link {
	w := words[t.opts.Language]
	var out []Link
	if alertURL != "" {
		out = append(out, Link{Title: w.viewAlert, URL: alertURL})
	}
	if deviceURL != "" {
		out = append(out, Link{Title: w.viewDevice, URL: deviceURL})
	}
	return out
}

// viewURL is the link base URL joined with the escaped path elements, or
// "" without a base.
func (t *Template) viewURL(elems ...string) string {
	if t.opts.LinkBaseURL == "" {
		return ""
	}
	u := strings.TrimRight(t.opts.LinkBaseURL, "/")
	for _, e := range elems {
		u += "/" + url.PathEscape(e)
	}
	return u
}

// fit renders with the most list items (up to all) whose message fits,
// and, when not even zero items fit, cuts the body and then the title.
// Size grows with the item count.
func (t *Template) fit(all int, render func(n int) (Message, error), fits func(Message) bool) (Message, error) {
	if fits == nil {
		fits = func(Message) bool { return true }
	}
	full, err := render(all)
	if err != nil || fits(full) {
		return full, err
	}
	// The largest item count that fits.
	best, found := Message{}, false
	lo, hi := 0, all-1
	for lo <= hi {
		mid := (lo + hi) / 2
		m, err := render(mid)
		if err != nil {
			return Message{}, err
		}
		if fits(m) {
			best, found, lo = m, true, mid+1
		} else {
			hi = mid - 1
		}
	}
	if found {
		return best, nil
	}
	// Not even the summary fits: cut the body, then the title.
	m, err := render(0)
	if err != nil {
		return Message{}, err
	}
	return t.cutToFit(m, fits), nil
}

// cutToFit cuts the body, then the title (never the envelope), until m fits.
func (t *Template) cutToFit(m Message, fits func(Message) bool) Message {
	m.Truncated = true
	if n := longestPrefix(m.Body, func(s string) bool { c := m; c.Body = s; return fits(c) }); n >= 0 {
		m.Body = cut(m.Body, n)
		return m
	}
	if len(m.Links) > 0 {
		// The links go before the title is cut.
		m.Links = nil
		if n := longestPrefix(m.Body, func(s string) bool { c := m; c.Body = s; return fits(c) }); n >= 0 {
			m.Body = cut(m.Body, n)
			return m
		}
	}
	m.Body = ""
	title := strings.TrimPrefix(m.Title, t.Envelope(""))
	n := longestPrefix(title, func(s string) bool { c := m; c.Title = t.Envelope(s); return fits(c) })
	m.Title = t.Envelope(cut(title, max(n, 0)))
	return m
}

// message executes a title and a body template and applies the envelope.
func (t *Template) message(titleName, bodyName string, data any) (Message, error) {
	title, err := t.exec(titleName, data)
	if err != nil {
		return Message{}, err
	}
	body, err := t.exec(bodyName, data)
	if err != nil {
		return Message{}, err
	}
	return Message{Title: t.Envelope(oneLine(title)), Body: strings.TrimSpace(body)}, nil
}

// longestPrefix finds the most runes of s that, cut with "…", satisfy ok;
// -1 when none (not even the empty cut) does.
func longestPrefix(s string, ok func(string) bool) int {
	runes := utf8.RuneCountInString(s)
	best := -1
	lo, hi := 0, runes
	for lo <= hi {
		mid := (lo + hi) / 2
		if ok(cut(s, mid)) {
			best, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	return best
}

// cut keeps the first n runes of s and marks the cut with "…".
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for k := 0; k < n; k++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i] + "…"
}

func (t *Template) exec(name string, d any) (string, error) {
	var b bytes.Buffer
	if err := t.t.ExecuteTemplate(&b, name, d); err != nil {
		return "", fmt.Errorf("render %s: %w", name, err)
	}
	return b.String(), nil
}

func (t *Template) data(a events.AlertEvent, note Note) Data {
	w := words[t.opts.Language]
	d := Data{
		Firing:    a.Status == events.StatusFiring,
		RawKind:   string(a.Kind),
		Kind:      lookup(w.kinds, string(a.Kind)),
		Severity:  lookup(w.severities, string(a.Severity)),
		Status:    lookup(w.statuses, string(a.Status)),
		Total:     max(a.DevicesTotal, len(a.Devices)),
		Group:     t.group(a.GroupLabels),
		StartsAt:  t.clock(a.StartsAtMS, "2006-01-02 15:04:05 -07:00"),
		ShortID:   a.ID[:min(len(a.ID), 12)],
		New:       max(a.NewTotal, 0),
		Recovered: max(a.ResolvedTotal, 0),
		Still:     max(a.FiringTotal, 0),
		Known:     max(a.KnownTotal, 0),
		Flaps:     max(a.FlapCount, 0),
		Tier:      max(a.Tier, 0),
		AlertURL:  t.viewURL("alerts", a.Fingerprint),
	}
	d.Kind = text(d.Kind, maxShortRunes)
	d.Update = d.Firing && (d.Recovered > 0 || d.Still > 0)
	d.Changes = changes(t.opts.Language, d.New, d.Recovered, d.Still)
	if d.Known > 0 {
		d.Share = share(d.Total, d.Known)
	}
	if len(a.Devices) > 0 {
		d.FirstID = text(a.Devices[0].DeviceID, maxDeviceIDRunes)
		if d.Total == 1 {
			d.DeviceURL = t.viewURL("devices", a.Devices[0].DeviceID)
		}
	}
	node := a.GroupLabels["node"]
	if node == "" && len(a.Devices) > 0 {
		node = a.Devices[0].Node
	}
	d.Node = text(node, maxShortRunes)
	if note.EscalatedFrom != "" {
		d.EscalatedFrom = text(note.EscalatedFrom, maxShortRunes)
		d.EscalatedAfter = humanDuration(note.EscalatedAfter, t.opts.Language)
	}
	d.Escalated = d.EscalatedFrom != "" || d.Tier > 0
	if a.Status == events.StatusResolved {
		d.EndsAt = t.clock(a.EndsAtMS, "2006-01-02 15:04:05 -07:00")
		d.Duration = humanDuration(time.Duration(a.EndsAtMS-a.StartsAtMS)*time.Millisecond, t.opts.Language)
	}
	for _, dev := range a.Devices {
		v := Device{
			ID:     text(dev.DeviceID, maxDeviceIDRunes),
			Node:   text(dev.Node, maxShortRunes),
			Reason: text(lookup(w.reasons, string(dev.Reason)), maxShortRunes),
			// In a resolved alert every device is back; in a firing group
			// notification a device may be listed as recovered.
			Recovered: dev.Status == events.StatusResolved || a.Status == events.StatusResolved,
		}
		if dev.SinceMS > 0 {
			v.Since = t.clock(dev.SinceMS, "01-02 15:04:05")
		}
		until := dev.UntilMS
		if until == 0 && a.Status == events.StatusResolved {
			until = a.EndsAtMS
		}
		if until > 0 && v.Recovered {
			v.Until = t.clock(until, "01-02 15:04:05")
			if dev.SinceMS > 0 && until >= dev.SinceMS {
				v.Outage = humanDuration(time.Duration(until-dev.SinceMS)*time.Millisecond, t.opts.Language)
			}
		}
		d.Devices = append(d.Devices, v)
	}
	if d.FirstOutage = d.Duration; len(d.Devices) > 0 && d.Devices[0].Outage != "" {
		d.FirstOutage = d.Devices[0].Outage
	}
	return d
}

// changes renders a group notification's counts, leaving out zeros:
// "12 new offline, 3 recovered, 140 still down"; "" when all are zero.
func changes(lang Language, fresh, recovered, still int) string {
	var parts []string
	add := func(n int, zh, en string) {
		if n <= 0 {
			return
		}
		if lang == Chinese {
			parts = append(parts, fmt.Sprintf(zh, n))
		} else {
			parts = append(parts, fmt.Sprintf(en, n))
		}
	}
	add(fresh, "新离线 %d 台", "%d new offline")
	add(recovered, "恢复 %d 台", "%d recovered")
	add(still, "仍离线 %d 台", "%d still down")
	if lang == Chinese {
		return strings.Join(parts, "，")
	}
	return strings.Join(parts, ", ")
}

// share renders part/whole as a percentage: whole numbers from 10 %, one
// decimal below ("0.4%"), never 0 % or 100 % unless exact.
func share(part, whole int) string {
	if whole <= 0 {
		return ""
	}
	p := float64(part) * 100 / float64(whole)
	switch {
	case part <= 0:
		return "0%"
	case part >= whole:
		return "100%"
	case p < 10:
		return strconv.FormatFloat(max(math.Floor(p*10)/10, 0.1), 'f', -1, 64) + "%"
	}
	return strconv.Itoa(min(int(math.Floor(p)), 99)) + "%"
}

func (t *Template) clock(ms int64, layout string) string {
	return time.UnixMilli(ms).In(t.opts.Location).Format(layout)
}

func (t *Template) group(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, min(len(keys), maxGroupLabels)+1)
	for i, k := range keys {
		if i == maxGroupLabels {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, text(k, maxShortRunes)+"="+text(labels[k], maxShortRunes))
	}
	return text(strings.Join(parts, ", "), maxGroupRunes)
}

func lookup(m map[string]string, k string) string {
	if v, ok := m[k]; ok {
		return v
	}
	return k
}

// text makes an untrusted value safe to embed in markdown and lark_md:
// control characters become spaces (no injected lines or headings),
// angle brackets become entities (no injected <at id=all>, <font>), and the
// value is capped at n runes.
func text(s string, n int) string {
	var b strings.Builder
	count := 0
	for _, r := range s {
		if count == n {
			b.WriteString("…")
			break
		}
		count++
		switch {
		case r == utf8.RuneError:
			b.WriteRune('\uFFFD')
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case unicode.IsControl(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// humanDuration renders d with its two largest units: "2h 5m", "2小时5分".
func humanDuration(d time.Duration, lang Language) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Second)
	units := []struct {
		d      time.Duration
		en, zh string
	}{
		{24 * time.Hour, "d", "天"}, {time.Hour, "h", "小时"}, {time.Minute, "m", "分"}, {time.Second, "s", "秒"},
	}
	var parts []string
	for _, u := range units {
		if len(parts) == 2 {
			break
		}
		if n := d / u.d; n > 0 || (len(parts) > 0) {
			d -= n * u.d
			if n == 0 {
				break
			}
			if lang == Chinese {
				parts = append(parts, fmt.Sprintf("%d%s", n, u.zh))
			} else {
				parts = append(parts, fmt.Sprintf("%d%s", n, u.en))
			}
		}
	}
	if len(parts) == 0 {
		if lang == Chinese {
			return "0秒"
		}
		return "0s"
	}
	sep := " "
	if lang == Chinese {
		sep = ""
	}
	return strings.Join(parts, sep)
}
