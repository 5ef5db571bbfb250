package main

import (
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/notifier"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg := defaultConfig()
	if err := stage.Load([]byte(notifier.ExampleConfig), "config.example.yaml", cfg); err != nil {
		t.Fatal(err)
	}
	n := cfg.Notifier
	if len(n.Receivers) != 2 || n.Receivers[0].DingTalk == nil || n.Receivers[0].DingTalk.Keyword != "告警" || n.Receivers[1].Feishu == nil {
		t.Fatalf("receivers %+v", n.Receivers)
	}
	if len(n.RateLimits.Feishu) != 2 || n.RateLimits.Feishu[1].Count != 95 || n.Idempotency.Bucket != "fleetwatch_notified" {
		t.Fatalf("config %+v", n)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	cfg := defaultConfig()
	bad := strings.Replace(notifier.ExampleConfig, "keyword: 告警", "keywords: 告警", 1)
	if err := stage.Load([]byte(bad), "bad.yaml", cfg); err == nil || !strings.Contains(err.Error(), "keywords") {
		t.Fatalf("err = %v", err)
	}
}
