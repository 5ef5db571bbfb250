package notify

import (
	"strings"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// Plain turns the templates' markdown into plain text: no bold markers,
// markdown's "two spaces, newline" line breaks as plain newlines.
func Plain(s string) string {
	s = strings.ReplaceAll(s, "**", "")
	return strings.ReplaceAll(s, "  \n", "\n")
}

// LinkLines renders links for a plain-text message: a "\nTitle: URL" line
// per link.
func LinkLines(links []template.Link) string {
	var b strings.Builder
	for _, l := range links {
		b.WriteString("\n" + l.Title + ": " + l.URL)
	}
	return b.String()
}

// PlainText renders m as plain text: the title, a blank line and the plain
// body (when there is one), then the links as LinkLines.
func PlainText(m template.Message) string {
	t := m.Title
	if m.Body != "" {
		t += "\n\n" + Plain(m.Body)
	}
	return t + LinkLines(m.Links)
}

// MarkdownLinks renders links as markdown links separated by " · ".
func MarkdownLinks(links []template.Link) string {
	ls := make([]string, 0, len(links))
	for _, l := range links {
		ls = append(ls, "["+l.Title+"]("+l.URL+")")
	}
	return strings.Join(ls, " · ")
}

// Palette is a channel's colours of a message by status and severity.
type Palette struct {
	Resolved, Critical, Warning, Other string
}

// Pick is the colour of a firing or resolved message of severity sev.
func (p Palette) Pick(firing bool, sev events.Severity) string {
	switch {
	case !firing:
		return p.Resolved
	case sev == events.SeverityCritical:
		return p.Critical
	case sev == events.SeverityWarning:
		return p.Warning
	}
	return p.Other
}
