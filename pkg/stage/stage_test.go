package stage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
)

type demoConfig struct {
	Common `yaml:",inline"`
	Demo   struct {
		Size int `yaml:"size"`
	} `yaml:"demo"`
}

func (c *demoConfig) CommonConfig() *Common { return &c.Common }

func (c *demoConfig) Validate() error {
	if c.Demo.Size < 1 {
		return errors.New("demo.size is 0: set it to 1 or more")
	}
	return nil
}

func newDemo() *demoConfig {
	c := &demoConfig{Common: DefaultCommon("demo")}
	c.Demo.Size = 1
	return c
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", "demo:\n  sise: 3\n", "line 2: field sise not found"},
		{"wrong type", "demo:\n  size: big\n", "line 2: cannot unmarshal"},
		{"stage rule", "demo:\n  size: 0\n", "demo.size is 0: set it to 1 or more"},
		{"nats url", "nats:\n  url: localhost:4222\n", `nats.url "localhost:4222" has no scheme`},
		{"log level", "log:\n  level: loud\n", `log.level is "loud": use debug, info, warn or error`},
		{"log format", "log:\n  format: xml\n", `log.format is "xml": use text or json`},
		{"admin listen", "admin:\n  listen: 9464\n", `admin.listen is "9464": use host:port`},
		{"replicas", "topology:\n  replicas: 0\n", "topology.replicas is 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Load([]byte(tc.yaml), "demo.yaml", newDemo())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "demo.yaml: ") {
				t.Fatalf("err = %v, want it to start with the file name and contain %q", err, tc.want)
			}
		})
	}
	cfg := newDemo()
	if err := Load([]byte("demo:\n  size: 7\nnats:\n  url: nats://127.0.0.1:1\n"), "ok.yaml", cfg); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if cfg.Demo.Size != 7 || cfg.NATS.URL != "nats://127.0.0.1:1" || cfg.Log.Level != "info" {
		t.Fatalf("loaded %+v, want size 7, the url set and defaults kept", cfg)
	}
}

func TestMainHelpAndBadConfig(t *testing.T) {
	var out bytes.Buffer
	spec := Spec{Name: "demo", Summary: "Demo does nothing.", Example: "demo:\n  size: 1\n"}
	never := func(context.Context, *Env) error { t.Fatal("run called"); return nil }
	if code := main(spec, newDemo(), []string{"--help"}, &out, never); code != 0 {
		t.Fatalf("--help exit code %d", code)
	}
	for _, want := range []string{"Usage: fleetwatch-demo", "Demo does nothing.", "-config", "Example config", "    demo:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := main(spec, newDemo(), []string{"--log-level", "loud"}, &out, never); code != 2 {
		t.Fatalf("bad flag value: exit code %d, want 2", code)
	}
	if !strings.Contains(out.String(), `log.level is "loud"`) {
		t.Fatalf("output %q lacks the log.level message", out.String())
	}
}

func TestStartServesAdminAndEnsuresStreams(t *testing.T) {
	srv := natstest.Start(t)
	common := DefaultCommon("demo")
	common.NATS.URL = srv.URL()
	common.Topology.MemoryStorage = true
	common.Admin.Listen = "127.0.0.1:0"

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	ran := make(chan error, 1)
	go func() {
		ran <- Start(ctx, common, logger, func(ctx context.Context, env *Env) error {
			for _, name := range []string{events.StreamPresence, events.StreamAlerts, events.StreamDeliveries, events.StreamDeadLetter} {
				if _, err := env.JetStream.Stream(ctx, name); err != nil {
					return err
				}
			}
			env.SetReady(func() error { return errors.New("warming up") })
			addr := adminAddr(logs.String())
			if addr == "" {
				return errors.New("admin address not logged")
			}
			if code, body := get(t, addr+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
				return errors.New("healthz: " + body)
			}
			if code, body := get(t, addr+"/readyz"); code != 503 || !strings.Contains(body, "warming up") {
				return errors.New("readyz while not ready: " + body)
			}
			env.SetReady(func() error { return nil })
			if code, _ := get(t, addr+"/readyz"); code != 200 {
				return errors.New("readyz when ready is not 200")
			}
			if code, body := get(t, addr+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
				return errors.New("metrics: missing go_goroutines")
			}
			return nil
		})
	}()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

func adminAddr(logs string) string {
	i := strings.Index(logs, "url=http://")
	if i < 0 {
		return ""
	}
	rest := logs[i+len("url="):]
	return rest[:strings.IndexAny(rest, " \n")]
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
