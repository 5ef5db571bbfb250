// Package analytics holds fleetwatch's outage analytics: named ClickHouse
// queries over the archiver's tables (availability, outages, MTTR/MTBF,
// flapping devices, mass-outage timeline, notification health, one
// device's history), rendered for clickhouse-go, for Grafana and for the
// documentation from one template each, and run by the report command.
//
// Every query works on ClickHouse 18.16 (no window functions, no query
// parameters, range(N) only) and on current releases, and deduplicates
// itself (GROUP BY the key with argMax, uniqExact, LIMIT 1 BY), so replays
// and redeliveries never change a result, merged or not.
//
// # Templates
//
// A query's SQL names its inputs as {placeholders}: {db}, {from_ms} and
// {to_ms} (epoch milliseconds, the half-open window [from, to)),
// {device}, {site}, {site_pattern} and {limit}. Render substitutes quoted
// literals; Grafana substitutes dashboard variables.
package analytics

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Placeholders a query template may use.
const (
	PDatabase    = "db"
	PFrom        = "from_ms"
	PTo          = "to_ms"
	PDevice      = "device"
	PSite        = "site"
	PSitePattern = "site_pattern"
	PLimit       = "limit"
)

// DefaultSitePattern derives the site from the device id convention
// <site>-dev-<n> (the devstack simulator's site-a-dev-0001 is in site
// "site-a"): the first capture group of this RE2 expression applied to the
// device id. Devices that do not match are in site "".
const DefaultSitePattern = `^(.+?)-dev-`

// DefaultLimit bounds the rows of ranking queries.
const DefaultLimit = 20

// Query is one named analytics query.
type Query struct {
	// Name is the query's name on the command line and in the docs.
	Name string
	// Title is a one-line summary.
	Title string
	// Doc explains what the query answers and how it counts.
	Doc string
	// SQL is the template.
	SQL string
	// NeedsDevice marks a query that requires a device.
	NeedsDevice bool
}

// Args are the values substituted into a template.
type Args struct {
	// Database holds the archiver's tables.
	Database string
	// From and To bound the window [From, To).
	From, To time.Time
	// Device filters to one device ("" all).
	Device string
	// Site filters to one site ("" all).
	Site string
	// SitePattern derives a device's site ("" DefaultSitePattern).
	SitePattern string
	// Limit bounds ranking queries (0 DefaultLimit).
	Limit int
}

var placeholder = regexp.MustCompile(`\{([a-z_]+)\}`)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// Placeholders lists the placeholders q's template uses, sorted.
func (q Query) Placeholders() []string {
	var out []string
	for _, m := range placeholder.FindAllStringSubmatch(q.SQL, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return out
}

// Render returns the query with every placeholder replaced by a literal.
func (q Query) Render(a Args) (string, error) {
	if !identifier.MatchString(a.Database) {
		return "", fmt.Errorf("database %q is not a plain identifier: use letters, digits and _", a.Database)
	}
	if a.From.IsZero() || a.To.IsZero() || !a.From.Before(a.To) {
		return "", fmt.Errorf("window [%s, %s) is empty: set --from before --to", fmtTime(a.From), fmtTime(a.To))
	}
	if a.From.UnixMilli() < 0 {
		return "", errors.New("from is before 1970: ClickHouse cannot store it")
	}
	if q.NeedsDevice && a.Device == "" {
		return "", fmt.Errorf("query %s needs a device: set --device", q.Name)
	}
	if a.Limit < 0 {
		return "", fmt.Errorf("limit %d is negative: use a positive number", a.Limit)
	}
	vals := map[string]string{
		PDatabase:    a.Database,
		PFrom:        strconv.FormatInt(a.From.UnixMilli(), 10),
		PTo:          strconv.FormatInt(a.To.UnixMilli(), 10),
		PDevice:      Quote(a.Device),
		PSite:        Quote(a.Site),
		PSitePattern: Quote(cmp(a.SitePattern, DefaultSitePattern)),
		PLimit:       strconv.Itoa(cmpInt(a.Limit, DefaultLimit)),
	}
	return substitute(q.SQL, vals)
}

// GrafanaVariables maps placeholders to the dashboard's variables.
var GrafanaVariables = map[string]string{
	PDatabase:    "${database}",
	PFrom:        "${__from}",
	PTo:          "${__to}",
	PDevice:      "'${device}'",
	PSite:        "'${site}'",
	PSitePattern: "'${site_pattern}'",
	PLimit:       "${limit}",
}

// Grafana returns the query as a Grafana panel's raw SQL: placeholders
// become dashboard variables (the time window is the dashboard's).
func (q Query) Grafana() string {
	s, _ := substitute(q.SQL, GrafanaVariables) // every placeholder is known (tested)
	return s
}

func substitute(sql string, vals map[string]string) (string, error) {
	var missing []string
	out := placeholder.ReplaceAllStringFunc(sql, func(m string) string {
		name := m[1 : len(m)-1]
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("unknown placeholders %v", missing)
	}
	return out, nil
}

// Quote returns s as a ClickHouse string literal.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\', '\'':
			b.WriteByte('\\')
			b.WriteByte(c)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func cmpInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "unset"
	}
	return t.UTC().Format(time.RFC3339)
}

// Lookup returns the query named name.
func Lookup(name string) (Query, bool) {
	for _, q := range Queries() {
		if q.Name == name {
			return q, true
		}
	}
	return Query{}, false
}

// Names lists the queries' names in documentation order.
func Names() []string {
	var out []string
	for _, q := range Queries() {
		out = append(out, q.Name)
	}
	return out
}
