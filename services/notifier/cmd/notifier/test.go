package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/notifier"
)

// testUsage documents the test subcommand.
const testUsage = `Usage: fleetwatch-notifier test [--config file] [--timeout 15s] <receiver>

Sends a test message to one receiver with its real configuration (URL,
secret, keyword, mentions) and prints the remote's raw answer, the outcome
and a hint. Exit status: 0 delivered, 1 not delivered, 2 usage or config
error. The first thing to run when a robot stays silent.
`

// exchange is one HTTP round trip as the remote saw it.
type exchange struct {
	method, where string
	reqBytes      int
	status        int
	header        http.Header
	body          []byte
	err           error
}

// recorder is an http.RoundTripper that keeps every exchange, with the
// URL reduced to scheme, host and path (the query and the path's last
// element can hold tokens).
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	log  []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchange{method: req.Method, where: redactURL(req), reqBytes: int(req.ContentLength)}
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		ex.err = err
	} else {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		ex.status, ex.header, ex.body, ex.err = resp.StatusCode, resp.Header, b, rerr
	}
	r.mu.Lock()
	r.log = append(r.log, ex)
	r.mu.Unlock()
	return resp, err
}

func redactURL(req *http.Request) string {
	path := req.URL.Path
	if i := strings.LastIndex(path, "/"); i >= 0 && i < len(path)-1 && strings.Count(path, "/") > 2 {
		path = path[:i+1] + "…"
	}
	s := req.URL.Scheme + "://" + req.URL.Host + path
	if req.URL.RawQuery != "" {
		s += "?…"
	}
	return s
}

// runTest runs the test subcommand with args (after "test").
func runTest(args []string, stdout, stderr io.Writer, transport http.RoundTripper) int {
	fs := flag.NewFlagSet("fleetwatch-notifier test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file with the notifier's receivers")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the remote")
	fs.Usage = func() { fmt.Fprint(stderr, testUsage+"\nFlags:\n"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	name := fs.Arg(0)
	cfg := defaultConfig()
	if *configPath != "" {
		if err := stage.LoadFile(*configPath, cfg); err != nil {
			fmt.Fprintf(stderr, "fleetwatch-notifier test: %v\n", err)
			return 2
		}
	} else if err := stage.Validate(cfg, "config"); err != nil {
		fmt.Fprintf(stderr, "fleetwatch-notifier test: %v (pass --config)\n", err)
		return 2
	}
	if transport == nil {
		transport = http.DefaultTransport
	}
	rec := &recorder{next: transport}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, channel, err := notifier.SendTest(ctx, cfg.Notifier, name, &http.Client{Transport: rec, Timeout: *timeout}, time.Now)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-notifier test: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "receiver %s (%s)\n", name, channel)
	for i, ex := range rec.log {
		fmt.Fprintf(stdout, "\nrequest %d: %s %s (%d bytes)\n", i+1, ex.method, ex.where, ex.reqBytes)
		if ex.status == 0 {
			fmt.Fprintf(stdout, "no answer: %v\n", ex.err)
			continue
		}
		fmt.Fprintf(stdout, "answer: HTTP %d", ex.status)
		for _, h := range []string{"Retry-After", "X-Ogw-Ratelimit-Reset"} {
			if v := ex.header.Get(h); v != "" {
				fmt.Fprintf(stdout, ", %s: %s", h, v)
			}
		}
		fmt.Fprintf(stdout, "\n%s\n", strings.TrimSpace(string(ex.body)))
	}
	fmt.Fprintf(stdout, "\noutcome: %s", res.Outcome)
	if res.RemoteCode != "" {
		fmt.Fprintf(stdout, " (code %s)", res.RemoteCode)
	}
	fmt.Fprintln(stdout)
	if res.Hint != "" {
		fmt.Fprintf(stdout, "hint: %s\n", res.Hint)
	}
	if res.Outcome != events.OutcomeDelivered {
		if res.Hint == "" && res.RemoteMessage != "" {
			fmt.Fprintf(stdout, "error: %s\n", res.RemoteMessage)
		}
		return 1
	}
	return 0
}
