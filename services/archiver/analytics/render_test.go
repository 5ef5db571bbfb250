package analytics_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
)

func TestEveryQueryUsesOnlyKnownPlaceholders(t *testing.T) {
	known := []string{analytics.PDatabase, analytics.PFrom, analytics.PTo, analytics.PDevice, analytics.PSite, analytics.PSitePattern, analytics.PLimit}
	seen := map[string]bool{}
	for _, q := range analytics.Queries() {
		if seen[q.Name] {
			t.Errorf("query name %s used twice", q.Name)
		}
		seen[q.Name] = true
		if q.Title == "" || q.Doc == "" {
			t.Errorf("%s: no title or doc", q.Name)
		}
		for _, p := range q.Placeholders() {
			if !slices.Contains(known, p) {
				t.Errorf("%s: unknown placeholder {%s}", q.Name, p)
			}
		}
		g := q.Grafana()
		if strings.Contains(g, "{db}") || strings.Contains(g, "{from_ms}") {
			t.Errorf("%s: Grafana SQL keeps placeholders", q.Name)
		}
	}
}

func TestRender(t *testing.T) {
	q := analytics.Query{Name: "t", SQL: "SELECT {device}, {site}, {site_pattern}, {limit} FROM {db}.x WHERE t >= {from_ms} AND t < {to_ms}"}
	from := time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC)
	got, err := q.Render(analytics.Args{Database: "fw", From: from, To: from.Add(time.Hour), Device: `it's a \ "dev"`})
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT 'it\'s a \\ "dev"', '', '^(.+?)-dev-', 20 FROM fw.x WHERE t >= 1717977600000 AND t < 1717981200000`
	if got != want {
		t.Errorf("Render:\n got %s\nwant %s", got, want)
	}
	if g := q.Grafana(); g != `SELECT '${device}', '${site}', '${site_pattern}', ${limit} FROM ${database}.x WHERE t >= ${__from} AND t < ${__to}` {
		t.Errorf("Grafana = %s", g)
	}
	bad := []struct {
		a    analytics.Args
		q    analytics.Query
		want string
	}{
		{analytics.Args{Database: "f-w", From: from, To: from.Add(1)}, q, `database "f-w" is not a plain identifier: use letters, digits and _`},
		{analytics.Args{Database: "fw", From: from, To: from}, q, `window [2024-06-10T00:00:00Z, 2024-06-10T00:00:00Z) is empty: set --from before --to`},
		{analytics.Args{Database: "fw", To: from}, q, `window [unset, 2024-06-10T00:00:00Z) is empty: set --from before --to`},
		{analytics.Args{Database: "fw", From: from, To: from.Add(time.Hour)}, analytics.Query{Name: "h", SQL: "x", NeedsDevice: true}, `query h needs a device: set --device`},
		{analytics.Args{Database: "fw", From: from, To: from.Add(time.Hour), Limit: -1}, q, `limit -1 is negative: use a positive number`},
		{analytics.Args{Database: "fw", From: from, To: from.Add(time.Hour)}, analytics.Query{Name: "u", SQL: "{nope}"}, `unknown placeholders [nope]`},
	}
	for _, b := range bad {
		if _, err := b.q.Render(b.a); err == nil || err.Error() != b.want {
			t.Errorf("Render(%+v) error = %v, want %q", b.a, err, b.want)
		}
	}
}

func TestTablePrint(t *testing.T) {
	tab := analytics.Table{
		Columns: []string{"device_id", "outages", "reason"},
		Rows: [][]string{
			{"site-a-dev-1", "3", "keepalive_timeout"},
			{"传感器", "12", "closed"},
		},
	}
	var b bytes.Buffer
	if err := tab.Print(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"device_id     outages  reason\n" +
		"------------  -------  -----------------\n" +
		"site-a-dev-1        3  keepalive_timeout\n" +
		"传感器" + strings.Repeat(" ", 16) + "12  closed\n" +
		"(2 rows)\n"
	if b.String() != want {
		t.Errorf("Print:\n%s\nwant:\n%s", b.String(), want)
	}
}

func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "dev-42", `a'b`, `a\'b`, "x\x00y", "传感器 7.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := analytics.Quote(s)
		if len(q) < 2 || q[0] != '\'' || q[len(q)-1] != '\'' {
			t.Fatalf("Quote(%q) = %s: not a literal", s, q)
		}
		// Unquote and compare: every ' and \ inside is escaped.
		var out []byte
		body := q[1 : len(q)-1]
		for i := 0; i < len(body); i++ {
			c := body[i]
			if c == '\'' {
				t.Fatalf("Quote(%q) = %s: unescaped quote", s, q)
			}
			if c == '\\' {
				i++
				if i == len(body) {
					t.Fatalf("Quote(%q) = %s: dangling backslash", s, q)
				}
				if body[i] == '0' {
					out = append(out, 0)
					continue
				}
				c = body[i]
			}
			out = append(out, c)
		}
		if string(out) != s {
			t.Fatalf("Quote(%q) = %s unquotes to %q", s, q, out)
		}
	})
}
