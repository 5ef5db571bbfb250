// Package stage runs one fleetwatch stage as a process: command-line flags, a
// strict YAML config file, structured logging, telemetry, the NATS connection
// and streams, the admin endpoints (health, readiness, metrics) and signal
// handling. A stage's main is a few lines around Main.
package stage

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/pkg/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"
)

// Common is the part of a stage's config file that every stage shares.
type Common struct {
	NATS      natsconn.Config  `yaml:"nats"`
	Topology  events.Topology  `yaml:"topology"`
	Telemetry telemetry.Config `yaml:"telemetry"`
	Admin     AdminConfig      `yaml:"admin"`
	Log       LogConfig        `yaml:"log"`
}

// AdminConfig configures the admin HTTP endpoints.
type AdminConfig struct {
	// Listen is host:port for /healthz, /readyz and /metrics ("" turns them off).
	Listen string `yaml:"listen"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// DefaultCommon returns the shared defaults for a stage.
func DefaultCommon(name string) Common {
	return Common{
		NATS:      natsconn.Config{URL: nats.DefaultURL, Name: "fleetwatch-" + name},
		Topology:  events.DefaultTopology(),
		Telemetry: telemetry.Config{ServiceName: "fleetwatch-" + name},
		Log:       LogConfig{Level: "info", Format: "text"},
	}
}

// Validate checks the shared settings.
func (c Common) Validate() error {
	if err := c.NATS.Validate(); err != nil {
		return err
	}
	if err := c.Topology.Validate(); err != nil {
		return err
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format is %q: use text or json", c.Log.Format)
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen is %q: use host:port, e.g. 127.0.0.1:9464", c.Admin.Listen)
		}
	}
	return nil
}

// Config is a stage's whole config file: Common inline plus the stage's own
// section. Validate checks the stage's section.
type Config interface {
	CommonConfig() *Common
	Validate() error
}

// Env is what Main hands to the stage.
type Env struct {
	// Logger is the process logger, with the stage name attached.
	Logger *slog.Logger
	// NATS is the connected client; JetStream has the streams ensured.
	NATS *nats.Conn
	// JetStream is a JetStream context on NATS.
	JetStream jetstream.JetStream
	// Telemetry holds the tracer and meter providers.
	Telemetry *telemetry.Providers
	// ConfigPath is the --config file ("" when none was given): a stage
	// that reloads its config on SIGHUP reads it again from there.
	ConfigPath string

	ready atomic.Pointer[func() error]
}

// SetReady installs the readiness check served at /readyz.
func (e *Env) SetReady(check func() error) { e.ready.Store(&check) }

// Spec names a stage and documents it for --help.
type Spec struct {
	// Name is the stage name (ingest, evaluator, notifier, archiver).
	Name string
	// Summary is one paragraph on what the stage does.
	Summary string
	// Example is a minimal config file, shown by --help.
	Example string
}

// LoadFile reads a YAML config file strictly into cfg (unknown keys are
// errors) and validates it.
func LoadFile(path string, cfg Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Load(b, path, cfg)
}

// Load decodes YAML strictly into cfg and validates it. name labels errors.
func Load(b []byte, name string, cfg Config) error {
	if err := decode(b, name, cfg); err != nil {
		return err
	}
	return Validate(cfg, name)
}

func decode(b []byte, name string, cfg Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %w (check the key names and value types against the example in --help)", name, err)
	}
	return nil
}

// Validate checks the common and the stage's settings.
func Validate(cfg Config, name string) error {
	if err := cfg.CommonConfig().Validate(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Main runs a stage: it parses flags and the config file into cfg (which
// holds the defaults), then connects and calls run until SIGINT/SIGTERM.
// It returns the process exit code.
func Main(spec Spec, cfg Config, run func(ctx context.Context, env *Env) error) int {
	return main(spec, cfg, os.Args[1:], os.Stderr, run)
}

func main(spec Spec, cfg Config, args []string, stderr io.Writer, run func(ctx context.Context, env *Env) error) int {
	fs := flag.NewFlagSet("fleetwatch-"+spec.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (see the example below); defaults apply when omitted")
	natsURL := fs.String("nats-url", "", "NATS server URL(s), overriding nats.url (also $FLEETWATCH_NATS_URL)")
	adminListen := fs.String("admin-listen", "", "host:port for /healthz, /readyz, /metrics, overriding admin.listen")
	logLevel := fs.String("log-level", "", "debug, info, warn or error, overriding log.level")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetwatch-%s [flags]\n\n%s\n\nFlags:\n", spec.Name, spec.Summary)
		fs.PrintDefaults()
		if spec.Example != "" {
			fmt.Fprintf(stderr, "\nExample config (--config):\n\n%s\n", indent(spec.Example))
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	common := cfg.CommonConfig()
	if *configPath != "" {
		b, err := os.ReadFile(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "fleetwatch-%s: read config: %v\n", spec.Name, err)
			return 2
		}
		if err := decode(b, *configPath, cfg); err != nil {
			fmt.Fprintf(stderr, "fleetwatch-%s: %v\n", spec.Name, err)
			return 2
		}
	}
	if v := os.Getenv("FLEETWATCH_NATS_URL"); v != "" {
		common.NATS.URL = v
	}
	if *natsURL != "" {
		common.NATS.URL = *natsURL
	}
	if *adminListen != "" {
		common.Admin.Listen = *adminListen
	}
	if *logLevel != "" {
		common.Log.Level = *logLevel
	}
	label := *configPath
	if label == "" {
		label = "config"
	}
	if err := Validate(cfg, label); err != nil {
		fmt.Fprintf(stderr, "fleetwatch-%s: %v\n", spec.Name, err)
		return 2
	}
	logger := NewLogger(common.Log, stderr).With("stage", spec.Name)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	withPath := func(ctx context.Context, env *Env) error {
		env.ConfigPath = *configPath
		return run(ctx, env)
	}
	if err := Start(ctx, *common, logger, withPath); err != nil {
		logger.Error("stopped with an error", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// Start sets up telemetry, connects to NATS, ensures the streams, serves the
// admin endpoints and calls run until it returns or ctx ends.
func Start(ctx context.Context, common Common, logger *slog.Logger, run func(ctx context.Context, env *Env) error) error {
	tel, err := telemetry.Setup(ctx, common.Telemetry)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	nc, err := natsconn.Connect(common.NATS, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	err = events.OpenRetrying(ctx, logger, "the fleetwatch streams", func(ctx context.Context) error {
		return events.EnsureStreams(ctx, js, common.Topology)
	})
	if err != nil {
		return err
	}
	env := &Env{Logger: logger, NATS: nc, JetStream: js, Telemetry: tel}
	if common.Admin.Listen != "" {
		srv, addr, err := ServeAdmin(common.Admin.Listen, tel.MetricsHandler(), env.readiness)
		if err != nil {
			return err
		}
		logger.Info("admin endpoints", "url", "http://"+addr, "paths", "/healthz /readyz /metrics")
		defer srv.Close()
	}
	logger.Info("started", "nats", nc.ConnectedUrlRedacted())
	return run(ctx, env)
}

func (e *Env) readiness() error {
	if !e.NATS.IsConnected() {
		return errors.New("nats not connected")
	}
	if f := e.ready.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// ServeAdmin serves /healthz, /readyz (ready() == nil) and /metrics on addr
// and returns the server and its bound address.
func ServeAdmin(addr string, metrics http.Handler, ready func() error) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("admin listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, `{"status":"not ready","error":%q}`+"\n", err.Error())
			return
		}
		_, _ = io.WriteString(w, `{"status":"ready"}`+"\n")
	})
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr().String(), nil
}

// NewLogger builds the process logger.
func NewLogger(c LogConfig, w io.Writer) *slog.Logger {
	lvl, err := parseLevel(c.Level)
	if err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log.level is %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n")
}
