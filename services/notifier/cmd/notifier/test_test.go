package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/services/notifier/chatsim"
)

func TestTestSubcommand(t *testing.T) {
	sim := chatsim.New(chatsim.Config{
		DingTalk: []chatsim.Robot{{Name: "dt", Token: "dt-token", Secret: "SEC0123456789abcdef", Keywords: []string{"报警"}}},
		Feishu:   []chatsim.Robot{{Name: "fs", Token: "fs-token", Keywords: []string{"告警"}}},
	})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	t.Setenv("TEST_DT_URL", sim.DingTalkURL("dt-token"))
	t.Setenv("TEST_DT_SECRET", "SEC0123456789abcdef")
	t.Setenv("TEST_FS_URL", sim.FeishuURL("fs-token"))
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "notifier.yaml")
	if err := os.WriteFile(cfgPath, []byte(`
notifier:
  receivers:
    - name: ops-dt
      channel: dingtalk
      dingtalk: {url_env: TEST_DT_URL, secret_env: TEST_DT_SECRET, keyword: 告警}
    - name: ops-fs
      channel: feishu
      feishu: {url_env: TEST_FS_URL, keyword: 告警, language: en}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		out  []string
		err  string
	}{
		{[]string{"--config", cfgPath, "ops-fs"}, 0, []string{
			"receiver ops-fs (feishu)", "request 1: POST " + sim.URL() + "/open-apis/bot/v2/hook/… (", `"msg":"success"`,
			"outcome: delivered (code 0)"}, ""},
		{[]string{"--config", cfgPath, "ops-dt"}, 1, []string{
			"receiver ops-dt (dingtalk)", "request 1: POST " + sim.URL() + "/robot/send?… (",
			"answer: HTTP 200\n{\"errcode\":310000,\"errmsg\":\"keywords not in content",
			"outcome: permanent (code 310000)", "hint: ", "告警"}, ""},
		{[]string{"--config", cfgPath, "nobody"}, 2, nil, `receiver "nobody" is not configured: use one of ["ops-dt" "ops-fs"]`},
		{[]string{"--config", cfgPath}, 2, nil, "Usage: fleetwatch-notifier test"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if code := runTest(tt.args, &stdout, &stderr, nil); code != tt.code {
			t.Fatalf("%v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tt.args, code, tt.code, stdout.String(), stderr.String())
		}
		for _, want := range tt.out {
			if !strings.Contains(stdout.String(), want) {
				t.Fatalf("%v: stdout lacks %q:\n%s", tt.args, want, stdout.String())
			}
		}
		if !strings.Contains(stderr.String(), tt.err) {
			t.Fatalf("%v: stderr lacks %q:\n%s", tt.args, tt.err, stderr.String())
		}
		if s := stdout.String() + stderr.String(); strings.Contains(s, "dt-token") || strings.Contains(s, "fs-token") || strings.Contains(s, "SEC0123") {
			t.Fatalf("%v: output leaks a secret:\n%s", tt.args, s)
		}
	}
	if n := len(sim.MessagesTo("fs")); n != 1 {
		t.Fatalf("%d test messages delivered", n)
	}
}
