package notifier

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
	"github.com/fleetwatch/fleetwatch/services/notifier/digest"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/dingtalk"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/feishu"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/slack"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/webhook"
	"github.com/fleetwatch/fleetwatch/services/notifier/notify/wecom"
	"github.com/fleetwatch/fleetwatch/services/notifier/template"
)

// BenchmarkSend measures notifications rendered, signed and delivered to
// a local strict server (rate limits off) per second, in parallel over
// GOMAXPROCS goroutines; notif/s/core divides by GOMAXPROCS. The server
// runs in the same process and shares the cores.
//
//	go test -run '^$' -bench BenchmarkSend -cpu 1,2 .
func BenchmarkSend(b *testing.B) {
	sim := chatsim.New(chatsim.Config{
		Unlimited: true,
		DingTalk:  []chatsim.Robot{{Name: "dt", Token: "dt", Secret: dtSecret, Keywords: []string{"告警"}}},
		Feishu:    []chatsim.Robot{{Name: "fs", Token: "fs", Secret: fsSecret, Keywords: []string{"告警"}}},
		WeCom:     []chatsim.Robot{{Name: "wc", Token: "wc"}},
		Slack:     []chatsim.Robot{{Name: "sl", Token: "T/B/sl"}},
		Webhook:   []chatsim.Robot{{Name: "wh", Token: "wh", Secret: "hook"}},
	})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sim.Close() })
	b.Setenv("BENCH_DT_SECRET", dtSecret)
	b.Setenv("BENCH_FS_SECRET", fsSecret)
	b.Setenv("BENCH_WH_SECRET", "hook")
	mk := map[string]func() (Notifier, error){
		"dingtalk": func() (Notifier, error) {
			return dingtalk.New(dingtalk.Config{URL: sim.DingTalkURL("dt"), SecretEnv: "BENCH_DT_SECRET", Keyword: "告警"}, nil, nil)
		},
		"feishu": func() (Notifier, error) {
			return feishu.New(feishu.Config{URL: sim.FeishuURL("fs"), SecretEnv: "BENCH_FS_SECRET", Keyword: "告警"}, nil, nil)
		},
		"wecom": func() (Notifier, error) {
			return wecom.New(wecom.Config{URL: sim.WeComURL("wc"), Keyword: "告警"}, nil)
		},
		"slack": func() (Notifier, error) {
			return slack.New(slack.Config{URL: sim.SlackURL("T/B/sl"), Keyword: "告警"}, nil)
		},
		"webhook": func() (Notifier, error) {
			return webhook.New(webhook.Config{URL: sim.WebhookURL("wh"), SecretEnv: "BENCH_WH_SECRET", Keyword: "告警"}, nil, nil)
		},
	}
	base := alert("bench", 10)
	for _, name := range []string{"dingtalk", "feishu", "wecom", "slack", "webhook"} {
		b.Run(name, func(b *testing.B) {
			n, err := mk[name]()
			if err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					a := base
					a.ID = fmt.Sprint("bench-", seq.Add(1))
					if r, err := n.Send(b.Context(), notify.AlertContent(a)); err != nil {
						b.Errorf("%+v", r)
						return
					}
				}
			})
			perSec := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(perSec, "notif/s")
			b.ReportMetric(perSec/float64(runtime.GOMAXPROCS(0)), "notif/s/core")
		})
	}
}

// BenchmarkDigest5000 folds 5,000 one-device alerts and renders the
// digest within DingTalk's budget: the CPU a storm's digest costs.
func BenchmarkDigest5000(b *testing.B) {
	alerts := make([]events.AlertEvent, 5000)
	now := time.Now()
	for i := range alerts {
		alerts[i] = deviceAlert("ops", fmt.Sprintf("sz01-%05d", i), events.StatusFiring, now, time.Time{}, now)
	}
	tmpl, err := template.New(template.Options{Keyword: "告警"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d := digest.Fold("ops", alerts, digest.Options{GroupBy: []string{"site"}})
		if _, err := tmpl.RenderDigest(d, func(m template.Message) bool { return len(m.Title)+len(m.Body) <= 18000 }); err != nil {
			b.Fatal(err)
		}
	}
}
