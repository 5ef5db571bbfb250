package analytics_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/services/archiver/analytics"
	"gopkg.in/yaml.v3"
)

var updateGrafana = flag.Bool("update-grafana", false, "rewrite deploy/grafana/dashboards/fleetwatch.json from the queries")

const (
	grafanaDir     = "../../../deploy/grafana"
	dashboardFile  = grafanaDir + "/dashboards/fleetwatch.json"
	datasourceUID  = "fleetwatch-clickhouse"
	datasourceType = "grafana-clickhouse-datasource"
)

// dashboardPanel places one query on the dashboard.
type dashboardPanel struct {
	query, title, kind string // kind: table or timeseries
	w, h               int
}

// dashboardLayout is the dashboard, top to bottom, left to right, on
// Grafana's 24-column grid.
var dashboardLayout = []dashboardPanel{
	{"availability-site-day", "Fleet availability per site and day", "table", 12, 8},
	{"reliability-site", "MTTR / MTBF per site", "table", 12, 8},
	{"mass-outage", "Mass-outage timeline: devices offline per minute per site", "timeseries", 24, 9},
	{"outages", "Outages", "table", 14, 10},
	{"flappers", "Top flapping devices", "table", 10, 10},
	{"availability", "Least available devices", "table", 12, 9},
	{"delivery-health", "Alert delivery health per receiver", "table", 12, 9},
	{"device-history", "Device history (set the device variable)", "table", 24, 10},
}

func datasource() map[string]any { return map[string]any{"type": datasourceType, "uid": datasourceUID} }

func textVar(name, label, value string) map[string]any {
	return map[string]any{"name": name, "label": label, "type": "textbox", "query": value,
		"current": map[string]any{"text": value, "value": value}, "hide": 0}
}

func constVar(name, value string) map[string]any {
	return map[string]any{"name": name, "type": "constant", "query": value, "hide": 2,
		"current": map[string]any{"text": value, "value": value}}
}

// dashboard builds the dashboard JSON from the documented queries.
func dashboard(t *testing.T) []byte {
	t.Helper()
	var panels []any
	x, y, rowH := 0, 0, 0
	for i, p := range dashboardLayout {
		q, ok := analytics.Lookup(p.query)
		if !ok {
			t.Fatalf("dashboard panel %q: no such query", p.query)
		}
		if x+p.w > 24 {
			x, y, rowH = 0, y+rowH, 0
		}
		format := 1 // table
		if p.kind == "timeseries" {
			format = 0
		}
		panels = append(panels, map[string]any{
			"id": i + 1, "type": p.kind, "title": p.title, "description": q.Title + ". " + q.Doc + " (docs/analytics.md: " + q.Name + ")",
			"datasource": datasource(),
			"gridPos":    map[string]int{"x": x, "y": y, "w": p.w, "h": p.h},
			"targets": []any{map[string]any{
				"refId": "A", "datasource": datasource(), "editorType": "sql", "queryType": p.kind,
				"format": format, "rawSql": q.Grafana(),
			}},
		})
		x += p.w
		rowH = max(rowH, p.h)
	}
	d := map[string]any{
		"uid": "fleetwatch-outages", "title": "fleetwatch: fleet availability and outages",
		"description":   "Outage analytics over the fleetwatch archive (docs/analytics.md). Times are UTC.",
		"tags":          []string{"fleetwatch"},
		"timezone":      "utc",
		"schemaVersion": 39,
		"editable":      true,
		"time":          map[string]string{"from": "now-24h", "to": "now"},
		"refresh":       "1m",
		"templating": map[string]any{"list": []any{
			constVar("database", "fleetwatch"),
			constVar("site_pattern", analytics.DefaultSitePattern),
			textVar("site", "Site (empty: all)", ""),
			textVar("device", "Device (for the history)", ""),
			textVar("limit", "Rows in rankings", "20"),
		}},
		"panels": panels,
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep the SQL's < and > readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGrafanaDashboardIsGenerated(t *testing.T) {
	want := dashboard(t)
	got, err := os.ReadFile(filepath.FromSlash(dashboardFile))
	if *updateGrafana {
		if err := os.WriteFile(filepath.FromSlash(dashboardFile), want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is out of date: run go test ./analytics -run TestGrafanaDashboardIsGenerated -update-grafana", dashboardFile)
	}
}

// TestGrafanaPanelsRunDocumentedQueries parses the dashboard as Grafana
// would and checks that every panel's SQL is one of the documented
// queries, over the provisioned ClickHouse data source, with every
// variable it uses defined.
func TestGrafanaPanelsRunDocumentedQueries(t *testing.T) {
	b, err := os.ReadFile(filepath.FromSlash(dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct{ Type, UID string }
			Targets    []struct {
				Datasource struct{ Type, UID string }
				EditorType string `json:"editorType"`
				RawSQL     string `json:"rawSql"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, q := range analytics.Queries() {
		documented[q.Grafana()] = q.Name
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	var used []string
	for _, p := range d.Panels {
		if p.Datasource.Type != datasourceType || p.Datasource.UID != datasourceUID {
			t.Errorf("panel %q: data source %+v, want the provisioned %s", p.Title, p.Datasource, datasourceUID)
		}
		if len(p.Targets) != 1 {
			t.Errorf("panel %q: %d queries, want 1", p.Title, len(p.Targets))
			continue
		}
		tg := p.Targets[0]
		name, ok := documented[tg.RawSQL]
		if !ok {
			t.Errorf("panel %q runs SQL that is not a documented query:\n%s", p.Title, tg.RawSQL)
			continue
		}
		used = append(used, name)
		if tg.EditorType != "sql" || tg.Datasource.UID != datasourceUID {
			t.Errorf("panel %q: editorType %q data source %+v", p.Title, tg.EditorType, tg.Datasource)
		}
		for _, m := range grafanaVar.FindAllStringSubmatch(tg.RawSQL, -1) {
			if !strings.HasPrefix(m[1], "__") && !slices.Contains(vars, m[1]) {
				t.Errorf("panel %q uses ${%s}, which the dashboard does not define", p.Title, m[1])
			}
		}
	}
	for _, want := range []string{"availability-site-day", "outages", "flappers", "delivery-health", "mass-outage"} {
		if !slices.Contains(used, want) {
			t.Errorf("no panel shows %s", want)
		}
	}

	// The provisioning: the data source the panels name, and a dashboard
	// provider that loads the directory the compose file mounts.
	var ds struct {
		Datasources []struct {
			Name, Type, UID string
			JSONData        map[string]any `yaml:"jsonData"`
		}
	}
	readYAML(t, grafanaDir+"/provisioning/datasources/clickhouse.yaml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != datasourceType || ds.Datasources[0].UID != datasourceUID {
		t.Fatalf("datasources %+v, want one %s with uid %s", ds.Datasources, datasourceType, datasourceUID)
	}
	jd := ds.Datasources[0].JSONData
	if jd["protocol"] != "native" || jd["port"] != 9000 || jd["host"] != "clickhouse" || jd["defaultDatabase"] != "fleetwatch" {
		t.Errorf("datasource jsonData %v: want the compose clickhouse service, native port 9000, database fleetwatch", jd)
	}
	var prov struct {
		Providers []struct {
			Name    string
			Type    string
			Options struct{ Path string }
		}
	}
	readYAML(t, grafanaDir+"/provisioning/dashboards/fleetwatch.yaml", &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path != "/var/lib/grafana/dashboards/fleetwatch" {
		t.Errorf("dashboard providers %+v, want one file provider for /var/lib/grafana/dashboards/fleetwatch", prov.Providers)
	}
}

var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// TestComposeRunsGrafanaWithTheDashboard: deploy/compose mounts the
// provisioning and the dashboard where the provider looks, and installs
// the data source plugin.
func TestComposeRunsGrafanaWithTheDashboard(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, "../../../deploy/compose/docker-compose.yml", &c)
	g, ok := c.Services["grafana"]
	if !ok {
		t.Fatal("deploy/compose has no grafana service")
	}
	for _, v := range []string{"../grafana/provisioning:/etc/grafana/provisioning:ro", "../grafana/dashboards:/var/lib/grafana/dashboards/fleetwatch:ro"} {
		if !slices.Contains(g.Volumes, v) {
			t.Errorf("grafana volumes %v lack %s", g.Volumes, v)
		}
	}
	if !strings.HasPrefix(g.Environment["GF_INSTALL_PLUGINS"], datasourceType+" ") {
		t.Errorf("GF_INSTALL_PLUGINS = %q, want %s <version>", g.Environment["GF_INSTALL_PLUGINS"], datasourceType)
	}
}
