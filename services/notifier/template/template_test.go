package template

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

var cst = time.FixedZone("CST", 8*3600)

const t0 = 1714528800000 // 2024-05-01 10:00:00 +08:00

func offline(status events.AlertStatus, kind events.AlertKind, n, total int) events.AlertEvent {
	a := events.AlertEvent{
		V: 1, ID: "0123456789abcdef0123456789abcdef", Fingerprint: "fp", Receiver: "ops",
		Status: status, Kind: kind, Severity: events.SeverityCritical,
		GroupLabels: map[string]string{"site": "sh-01"}, StartsAtMS: t0, DevicesTotal: total,
	}
	if status == events.StatusResolved {
		a.EndsAtMS = t0 + 3723_000 // 1h 2m 3s
	}
	for i := range n {
		d := events.AlertDevice{DeviceID: fmt.Sprintf("dev-%d", i), Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout, SinceMS: t0}
		if status == events.StatusResolved && i == 0 {
			d.UntilMS = t0 + 312_000
		}
		a.Devices = append(a.Devices, d)
	}
	return a
}

func mustNew(t *testing.T, lang Language, kw string) *Template {
	t.Helper()
	tp, err := New(Options{Language: lang, Keyword: kw, Location: cst})
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestRenderDefaults(t *testing.T) {
	tests := []struct {
		name  string
		lang  Language
		alert events.AlertEvent
		title string
		body  []string
	}{
		{"zh firing", Chinese, offline(events.StatusFiring, events.AlertDeviceOffline, 2, 2), "【告警】2 台设备离线 · site=sh-01", []string{
			"**状态**：告警中 · **级别**：严重 · **类型**：设备离线  \n",
			"**分组**：site=sh-01  \n",
			"**开始**：2024-05-01 10:00:00 +08:00  \n",
			"**设备**：共 2 台\n\n",
			"- dev-0 · 节点 emqx@n1 · 心跳超时 · 离线自 05-01 10:00:00\n- dev-1 · 节点 emqx@n1 · 心跳超时 · 离线自 05-01 10:00:00\n",
			"fleetwatch · 告警 ID 0123456789ab",
		}},
		{"zh firing one device", Chinese, offline(events.StatusFiring, events.AlertDeviceOffline, 1, 1), "【告警】设备离线：dev-0 · site=sh-01", nil},
		{"zh resolved", Chinese, offline(events.StatusResolved, events.AlertDeviceOffline, 2, 5), "【告警】已恢复：5 台设备重新上线，持续 1小时2分 · site=sh-01", []string{
			"**结束**：2024-05-01 11:02:03 +08:00（持续 1小时2分）",
			"- dev-0 · 节点 emqx@n1 · 心跳超时 · 离线 5分12秒（05-01 10:00:00 – 05-01 10:05:12）",
			"- dev-1 · 节点 emqx@n1 · 心跳超时 · 离线 1小时2分（05-01 10:00:00 – 05-01 11:02:03）",
			"- 另有 3 台\n",
		}},
		{"en firing", English, offline(events.StatusFiring, events.AlertDeviceOffline, 1, 3), "[告警] 3 devices offline · site=sh-01", []string{
			"**Status**: firing · **Severity**: critical · **Kind**: Device offline  \n",
			"- dev-0 · node emqx@n1 · keepalive timeout · offline since 05-01 10:00:00\n- +2 more\n",
			"fleetwatch · alert id 0123456789ab",
		}},
		{"en resolved one", English, offline(events.StatusResolved, events.AlertDeviceOffline, 1, 1), "[告警] Resolved: dev-0 back online after 5m 12s · site=sh-01", []string{
			"**Ended**: 2024-05-01 11:02:03 +08:00 (lasted 1h 2m)",
			"- dev-0 · node emqx@n1 · keepalive timeout · offline for 5m 12s (05-01 10:00:00 – 05-01 10:05:12)",
		}},
		{"zh other kind", Chinese, offline(events.StatusFiring, events.AlertGroupOutage, 1, 40), "【告警】批量离线：site=sh-01 40 台设备离线", []string{"**类型**：批量离线"}},
		{"en other kind resolved", English, offline(events.StatusResolved, events.AlertDeviceFlapping, 1, 1), "[告警] Resolved: dev-0 is stable again · site=sh-01", nil},
		{"unknown kind", English, offline(events.StatusFiring, "cpu_hot", 1, 2), "[告警] cpu_hot: 2 devices · site=sh-01", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := mustNew(t, tt.lang, "告警").Render(tt.alert, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Title != tt.title {
				t.Fatalf("title %q, want %q", m.Title, tt.title)
			}
			for _, want := range tt.body {
				if !strings.Contains(m.Body, want) {
					t.Fatalf("body lacks %q:\n%s", want, m.Body)
				}
			}
		})
	}
}

// Every message kind carries the keyword, in the title (and so in the
// DingTalk text heading and the Feishu card header).
func TestKeywordEnvelopeEverywhere(t *testing.T) {
	for _, lang := range []Language{Chinese, English} {
		for _, kind := range []events.AlertKind{events.AlertDeviceOffline, events.AlertDeviceFlapping, events.AlertGroupOutage, events.AlertNodeSilent, "future_kind"} {
			for _, st := range []events.AlertStatus{events.StatusFiring, events.StatusResolved} {
				for _, n := range []int{0, 1, 3} {
					m, err := mustNew(t, lang, "FW-KEY").Render(offline(st, kind, n, n), nil)
					if err != nil {
						t.Fatal(err)
					}
					if !strings.Contains(m.Title, "FW-KEY") {
						t.Errorf("%s %s %s %d: title %q lacks the keyword", lang, kind, st, n, m.Title)
					}
				}
			}
		}
	}
	if got := mustNew(t, English, "").Envelope("x"); got != "x" {
		t.Errorf("no keyword envelope = %q", got)
	}
}

func TestUntrustedValuesAreNeutralised(t *testing.T) {
	a := offline(events.StatusFiring, events.AlertDeviceOffline, 1, 1)
	a.Devices[0].DeviceID = "evil\n### <at id=all></at><font color=red>x"
	a.Devices[0].Node = strings.Repeat("n", 500)
	a.GroupLabels = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7"}
	m, err := mustNew(t, English, "k").Render(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.Body, "<at") || strings.Contains(m.Body, "<font") || strings.Contains(m.Body, "\n###") || strings.Contains(m.Title, "\n") {
		t.Fatalf("injection survived:\n%s\n%s", m.Title, m.Body)
	}
	if !strings.Contains(m.Body, "evil ### &lt;at id=all&gt;&lt;/at&gt;") {
		t.Fatalf("body:\n%s", m.Body)
	}
	if !strings.Contains(m.Body, "node "+strings.Repeat("n", maxShortRunes)+"…") {
		t.Fatalf("node not capped:\n%s", m.Body)
	}
	if !strings.Contains(m.Title, "a=1, b=2, c=3, d=4, e=5, f=6, …") {
		t.Fatalf("group labels not capped: %q", m.Title)
	}
}

func TestBudgetTruncatesDeviceList(t *testing.T) {
	a := offline(events.StatusFiring, events.AlertDeviceOffline, 100, 100)
	for i := range a.Devices {
		a.Devices[i].DeviceID = fmt.Sprintf("设备-%03d-%s", i, strings.Repeat("温湿度传感器😀", 40))
	}
	for _, lang := range []Language{Chinese, English} {
		for _, limit := range []int{20000, 8000, 3000} {
			fits := func(m Message) bool { return len(m.Title)+len(m.Body) <= limit }
			m, err := mustNew(t, lang, "告警").Render(a, fits)
			if err != nil {
				t.Fatal(err)
			}
			if !fits(m) || m.Shown == 0 || m.Shown == 100 || m.Omitted != 100-m.Shown || m.Truncated {
				t.Fatalf("%s/%d: %d bytes, shown %d, omitted %d", lang, limit, len(m.Title)+len(m.Body), m.Shown, m.Omitted)
			}
			want := fmt.Sprintf("- 另有 %d 台", m.Omitted)
			if lang == English {
				want = fmt.Sprintf("- +%d more", m.Omitted)
			}
			if !strings.Contains(m.Body, want) {
				t.Fatalf("%s: no %q in\n%s", lang, want, m.Body)
			}
			if !utf8.ValidString(m.Body) {
				t.Fatal("invalid UTF-8")
			}
		}
	}
}

func TestBudgetLastResortCutsText(t *testing.T) {
	a := offline(events.StatusFiring, events.AlertDeviceOffline, 5, 5)
	tp := mustNew(t, Chinese, "告警")
	for _, limit := range []int{200, 60, 10, 0} {
		fits := func(m Message) bool { return len(m.Title)+len(m.Body) <= limit }
		m, err := tp.Render(a, fits)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Truncated || m.Shown != 0 || !utf8.ValidString(m.Body) || !utf8.ValidString(m.Title) {
			t.Fatalf("limit %d: %+v", limit, m)
		}
		if limit >= 60 && !fits(m) {
			t.Fatalf("limit %d: %d bytes", limit, len(m.Title)+len(m.Body))
		}
		if !strings.HasPrefix(m.Title, "【告警】") {
			t.Fatalf("limit %d: envelope lost: %q", limit, m.Title)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d      time.Duration
		en, zh string
	}{
		{0, "0s", "0秒"},
		{45 * time.Second, "45s", "45秒"},
		{5*time.Minute + 12*time.Second, "5m 12s", "5分12秒"},
		{time.Hour, "1h", "1小时"},
		{time.Hour + 2*time.Minute + 3*time.Second, "1h 2m", "1小时2分"},
		{50*time.Hour + 30*time.Minute, "2d 2h", "2天2小时"},
		{-time.Second, "0s", "0秒"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.d, English); got != tt.en {
			t.Errorf("en %s = %q, want %q", tt.d, got, tt.en)
		}
		if got := humanDuration(tt.d, Chinese); got != tt.zh {
			t.Errorf("zh %s = %q, want %q", tt.d, got, tt.zh)
		}
	}
}

func TestParseLanguage(t *testing.T) {
	for in, want := range map[string]Language{"": Chinese, "zh": Chinese, "en": English} {
		if got, err := ParseLanguage(in); err != nil || got != want {
			t.Errorf("ParseLanguage(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseLanguage("de"); err == nil || err.Error() != `language "de" is not supported: use zh or en` {
		t.Errorf("err = %v", err)
	}
}

func FuzzRenderFits(f *testing.F) {
	f.Add("dev-1", "emqx@n1", "sh-01", 3, 500, uint8(0), 0, 0, 0)
	f.Add("设备😀<at id=all>", "\x00\n", "", 100, 20000, uint8(2), 150, 3, 7)
	f.Add("d", "n", "s", 1, 300, uint8(7), 0, 1, 2)
	kinds := []events.AlertKind{events.AlertDeviceOffline, events.AlertDeviceFlapping, events.AlertGroupOutage, events.AlertNodeSilent}
	f.Fuzz(func(t *testing.T, id, node, site string, n, limit int, kind uint8, known, recovered, still int) {
		if id == "" || n < 0 || n > 100 || limit < 0 {
			return
		}
		st := events.StatusFiring
		if kind&4 != 0 {
			st = events.StatusResolved
		}
		a := offline(st, kinds[kind%4], n, n)
		a.KnownTotal, a.ResolvedTotal, a.FiringTotal, a.FlapCount, a.Tier = known, recovered, still, still, recovered
		a.GroupLabels = map[string]string{"site": site, "node": node}
		for i := range a.Devices {
			a.Devices[i].DeviceID = id
			a.Devices[i].Node = node
		}
		fits := func(m Message) bool { return len(m.Title)+len(m.Body) <= limit }
		m, err := mustNew(t, English, "k").Render(a, fits)
		if err != nil {
			t.Fatal(err)
		}
		if limit >= 400 && !fits(m) {
			t.Fatalf("limit %d: %d bytes", limit, len(m.Title)+len(m.Body))
		}
		if !utf8.ValidString(m.Title) || !utf8.ValidString(m.Body) {
			t.Fatal("invalid UTF-8")
		}
	})
}
