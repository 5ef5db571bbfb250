package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry/telemetrytest"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/backtest"
)

// TestExampleConfigRuns runs the embedded example config (NATS, ports and
// storage pointed at the test) until its API is ready, then SIGHUPs it with
// a bad and a good version of the file.
func TestExampleConfigRuns(t *testing.T) {
	srv := natstest.Start(t)
	t.Setenv("FLEETWATCH_EVALUATOR_API_TOKEN", "example-token-0123456789")
	example := strings.Replace(evaluator.ExampleConfig, "listen: 127.0.0.1:9480", "listen: 127.0.0.1:0", 1)
	example = strings.Replace(example, "url: nats://127.0.0.1:4222", "url: "+srv.URL(), 1)
	example = strings.Replace(example, "listen: 127.0.0.1:9465", `listen: ""`, 1)
	example = strings.Replace(example, "replicas: 1", "replicas: 1\n  memory_storage: true", 1)
	path := filepath.Join(t.TempDir(), "evaluator.yaml")
	if err := os.WriteFile(path, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	if err := stage.LoadFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	var logs telemetrytest.LogBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- stage.Start(ctx, cfg.Common, slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil)),
			func(ctx context.Context, env *stage.Env) error {
				env.ConfigPath = path
				return serve(cfg)(ctx, env)
			})
	}()
	var api string
	natstest.Eventually(t, 15*time.Second, func() bool {
		i := strings.Index(logs.String(), "msg=api url=http://")
		if i < 0 {
			return false
		}
		api = strings.Fields(logs.String()[i+len("msg=api url="):])[0]
		resp, err := http.Get(strings.TrimSuffix(api, "api/v1/") + "readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Get(api + "silences?status=pending")
	if err != nil {
		t.Fatal(err)
	}
	var sls struct {
		Silences []struct {
			ID     string `json:"id"`
			Source string `json:"source"`
		} `json:"silences"`
	}
	err = json.NewDecoder(resp.Body).Decode(&sls)
	resp.Body.Close()
	if err != nil || len(sls.Silences) > 1 || len(sls.Silences) == 1 && !strings.HasPrefix(sls.Silences[0].ID, "window-plant7-nightly-backup-") {
		t.Fatalf("window silences %+v %v", sls, err)
	}

	// A bad file is rejected, the old config stays; a good one applies.
	if err := os.WriteFile(path, []byte(example+"  gracee: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="SIGHUP: config rejected"`) && strings.Contains(logs.String(), "field gracee not found")
	})
	if err := os.WriteFile(path, []byte(strings.Replace(example, "grace: 30s", "grace: 45s", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return strings.Contains(logs.String(), `msg="config reloaded" grace=45s`) && strings.Contains(logs.String(), `msg="SIGHUP: config reloaded"`)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestReloadWithoutConfigFile(t *testing.T) {
	var logs telemetrytest.LogBuffer
	err := reload(t.Context(), "", nil, slog.New(slog.NewTextHandler(&logs, nil)))
	if !errors.Is(err, evaluator.ErrReload) || err.Error() != "config not reloaded, the old one stays in force: no --config file was given, nothing to re-read" {
		t.Fatalf("reload = %v", err)
	}
}

func TestSubcommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backtest", "--help"}, "Usage: fleetwatch-evaluator backtest --config candidate.yaml [--baseline current.yaml] (--jsonl FILE | --from T --to T)"},
		{[]string{"generate", "-h"}, "Usage: fleetwatch-evaluator generate --devices N --events N [--seed N] > history.jsonl"},
	} {
		var out, errOut bytes.Buffer
		if code := run(tc.args, &out, &errOut); code != 0 || !strings.HasPrefix(errOut.String(), tc.want) || !strings.Contains(errOut.String(), "  -") {
			t.Errorf("%v: exit %d\n%s", tc.args, code, errOut.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"backtest", "--config", "x.yaml"}, &out, &errOut); code != 2 ||
		errOut.String() != "fleetwatch-evaluator backtest: give either --jsonl FILE or --from T [--to T]\n" {
		t.Errorf("missing source: %d %q", code, errOut.String())
	}
}

// TestBacktestCommand generates a history and backtests the example config
// against a baseline with a longer grace.
func TestBacktestCommand(t *testing.T) {
	dir := t.TempDir()
	hist := filepath.Join(dir, "history.jsonl")
	var gen, errOut bytes.Buffer
	if code := run([]string{"generate", "--devices", "300", "--events", "20000", "--seed", "3"}, &gen, &errOut); code != 0 {
		t.Fatalf("generate: %d %s", code, errOut.String())
	}
	if err := os.WriteFile(hist, gen.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cand := filepath.Join(dir, "candidate.yaml")
	base := filepath.Join(dir, "baseline.yaml")
	if err := os.WriteFile(cand, []byte(evaluator.ExampleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base, []byte("evaluator:\n  grace: 5m\n  tick: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	errOut.Reset()
	if code := run([]string{"backtest", "--config", cand, "--baseline", base, "--jsonl", hist, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("backtest: %d %s", code, errOut.String())
	}
	var res backtest.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	c, b := res.Candidate, res.Baseline
	if res.Input.Lines != 20_000 || res.Input.Skipped != 0 || c.Events != 20_000 || b.Events != 20_000 || c.Outages != b.Outages ||
		c.Fired <= b.Fired || c.Blips >= b.Blips || res.Diff.OnlyBaseline != 0 || c.Receivers["default"] == nil {
		t.Fatalf("result %+v\ncandidate %+v\nbaseline %+v", res, c, b)
	}
	out.Reset()
	if code := run([]string{"backtest", "--config", cand, "--jsonl", hist}, &out, &errOut); code != 0 ||
		!strings.HasPrefix(out.String(), "replayed 20000 events") || !strings.Contains(out.String(), "top noisy devices") {
		t.Fatalf("text output: %d\n%s", code, out.String())
	}
}
