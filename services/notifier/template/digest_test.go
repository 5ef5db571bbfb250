package template

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
)

// storm is n one-device firing alerts of site sh-01 and m resolved ones.
func storm(n, m int) digest.Digest {
	var alerts []events.AlertEvent
	for i := range n + m {
		st := events.StatusFiring
		if i >= n {
			st = events.StatusResolved
		}
		id := fmt.Sprintf("dev-%04d", i)
		a := events.AlertEvent{V: 1, ID: "id-" + id, Fingerprint: id, Receiver: "ops", Status: st, Kind: events.AlertDeviceOffline,
			Severity: events.SeverityCritical, GroupLabels: map[string]string{"device_id": id}, DevicesTotal: 1, StartsAtMS: t0,
			Devices: []events.AlertDevice{{DeviceID: id, Node: "emqx@n1", Reason: events.ReasonKeepaliveTimeout, SinceMS: t0,
				Labels: map[string]string{"site": "sh-01"}}}}
		if st == events.StatusResolved {
			a.EndsAtMS = t0 + 60_000
		}
		alerts = append(alerts, a)
	}
	return digest.Fold("ops", alerts, digest.Options{GroupBy: []string{"site"}, Samples: 3})
}

func TestRenderDigestDefaults(t *testing.T) {
	d := storm(4, 1)
	tests := []struct {
		lang  Language
		title string
		body  string
	}{
		{Chinese, "【告警】告警汇总：4 台设备告警，1 台设备恢复", "**汇总**：5 条通知 · 告警 4 条（4 台） · 恢复 1 条（1 台）  \n" +
			"**类型**：设备离线 5 条  \n" +
			"**最高级别**：严重 · **时间**：05-01 10:00:00 – 05-01 10:01:00  \n" +
			"通知量超过发送频率限制，已合并为一条汇总。\n\n" +
			"**主要分组**：\n\n- site=sh-01：告警 4 台 · 恢复 1 台\n\n" +
			"**设备示例**：\n\n" +
			"- dev-0000 · 告警中 · site=sh-01 · 心跳超时 · 离线自 05-01 10:00:00\n" +
			"- dev-0001 · 告警中 · site=sh-01 · 心跳超时 · 离线自 05-01 10:00:00\n" +
			"- dev-0002 · 告警中 · site=sh-01 · 心跳超时 · 离线自 05-01 10:00:00\n" +
			"- 另有 2 台\n\n" +
			"fleetwatch · 汇总 ID " + d.ID[:12]},
		{English, "[alert] Digest: 4 devices firing, 1 device resolved", "**Summary**: 5 notifications · 4 firing (4 devices) · 1 resolved (1 device)  \n" +
			"**Kinds**: Device offline × 5  \n" +
			"**Highest severity**: critical · **Time**: 05-01 10:00:00 – 05-01 10:01:00  \n" +
			"More notifications than the rate limit allows: merged into one digest.\n\n" +
			"**Top groups**:\n\n- site=sh-01: 4 firing · 1 resolved\n\n" +
			"**Sample devices**:\n\n" +
			"- dev-0000 · firing · site=sh-01 · keepalive timeout · offline since 05-01 10:00:00\n" +
			"- dev-0001 · firing · site=sh-01 · keepalive timeout · offline since 05-01 10:00:00\n" +
			"- dev-0002 · firing · site=sh-01 · keepalive timeout · offline since 05-01 10:00:00\n" +
			"- +2 more\n\n" +
			"fleetwatch · digest id " + d.ID[:12]},
	}
	for _, tt := range tests {
		t.Run(string(tt.lang), func(t *testing.T) {
			kw := "告警"
			if tt.lang == English {
				kw = "alert"
			}
			m, err := mustNew(t, tt.lang, kw).RenderDigest(d, nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Title != tt.title || m.Body != tt.body {
				t.Fatalf("title %q\nbody\n%s\n--- want\n%s", m.Title, m.Body, tt.body)
			}
			if !m.Firing || m.Severity != events.SeverityCritical || m.Shown != 3 || m.Omitted != 2 {
				t.Fatalf("message %+v", m)
			}
		})
	}
}

func TestRenderDigestResolvedOnlyCarriesKeyword(t *testing.T) {
	d := storm(0, 2)
	m, err := mustNew(t, Chinese, "告警").RenderDigest(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Title != "【告警】告警汇总：2 台设备恢复" || m.Firing {
		t.Fatalf("message %+v", m)
	}
}

func TestRenderDigestBudget(t *testing.T) {
	d := storm(5000, 0)
	for _, budget := range []int{200, 600, 1500, 20000} {
		m, err := mustNew(t, Chinese, "告警").RenderDigest(d, func(m Message) bool { return len(m.Title)+len(m.Body) <= budget })
		if err != nil {
			t.Fatal(err)
		}
		if n := len(m.Title) + len(m.Body); n > budget || !utf8.ValidString(m.Body) || !strings.HasPrefix(m.Title, "【告警】") {
			t.Fatalf("budget %d: %d bytes, title %q", budget, n, m.Title)
		}
		if !m.Truncated && m.Shown+m.Omitted != 5000 {
			t.Fatalf("budget %d: shown %d + omitted %d", budget, m.Shown, m.Omitted)
		}
		if !m.Truncated && !strings.Contains(m.Body, fmt.Sprintf("另有 %d 台", m.Omitted)) {
			t.Fatalf("budget %d: body lacks the +N more line:\n%s", budget, m.Body)
		}
	}
}

func TestRenderTestMessage(t *testing.T) {
	at := time.UnixMilli(t0)
	for lang, want := range map[Language]string{Chinese: "【告警】测试消息 · ops-dt", English: "[告警] Test message · ops-dt"} {
		m, err := mustNew(t, lang, "告警").RenderTest("ops-dt", at, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Title != want || !strings.Contains(m.Body, "2024-05-01 10:00:00 +08:00") || !strings.Contains(m.Body, "**ops-dt**") {
			t.Fatalf("%s: %+v", lang, m)
		}
	}
}
