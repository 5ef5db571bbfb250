package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/pkg/stage"
	"github.com/fleetwatch/fleetwatch/services/evaluator"
	"github.com/fleetwatch/fleetwatch/services/evaluator/backtest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/nats-io/nats.go/jetstream"
)

const backtestUsage = `Usage: fleetwatch-evaluator backtest --config candidate.yaml [--baseline current.yaml] (--jsonl FILE | --from T --to T)

Replays recorded presence events through the candidate config (and the
baseline, if given) with a simulated clock driven by the events' broker
time, and prints how many notifications each receiver would have received,
the noisiest devices, and the difference from the baseline. Each config's
routes (with flap suppression), correlation, inventory file and maintenance
windows (silences.windows) apply; the silences and the dynamic inventory of
the KV buckets and node health are not replayed.

Events come from a JSON-lines file (one PresenceEvent per line, e.g. from
"nats stream view" or the generate subcommand; "-" is stdin) or from the
PRESENCE stream between two times (RFC 3339), read over the candidate
config's nats section (or --nats-url).

Flags:
`

func backtestMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetwatch-evaluator backtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	candPath := fs.String("config", "", "candidate config file (required)")
	basePath := fs.String("baseline", "", "baseline config file to compare with (e.g. the one in production)")
	jsonl := fs.String("jsonl", "", `JSON-lines file of presence events ("-": stdin)`)
	fromS := fs.String("from", "", "replay PRESENCE from this time (RFC 3339)")
	toS := fs.String("to", "", "replay PRESENCE up to this time (RFC 3339; default now)")
	natsURL := fs.String("nats-url", "", "NATS URL overriding the candidate config's nats.url (--from/--to only)")
	until := fs.String("until", "", "let the simulated clock run to this time after the last event (RFC 3339; default: the last event's time, or --to)")
	top := fs.Int("top", 10, "noisy devices to list")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, backtestUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "fleetwatch-evaluator backtest: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q: see --help", fs.Arg(0))
	}
	if *candPath == "" {
		return fail("--config is required: the candidate config file")
	}
	if (*jsonl == "") == (*fromS == "") {
		return fail("give either --jsonl FILE or --from T [--to T]")
	}
	cand := defaultConfig()
	if err := stage.LoadFile(*candPath, cand); err != nil {
		return fail("%v", err)
	}
	candSim, err := newSim("candidate", cand.Evaluator)
	if err != nil {
		return fail("%s: %v", *candPath, err)
	}
	var baseSim *backtest.Sim
	if *basePath != "" {
		base := defaultConfig()
		if err := stage.LoadFile(*basePath, base); err != nil {
			return fail("%v", err)
		}
		if baseSim, err = newSim("baseline", base.Evaluator); err != nil {
			return fail("%s: %v", *basePath, err)
		}
	}
	opts := backtest.Options{Top: *top}
	parseTime := func(flagName, v string) (time.Time, error) {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return time.Time{}, fmt.Errorf("--%s %q is not an RFC 3339 time, e.g. 2025-01-31T08:00:00Z", flagName, v)
		}
		return t, nil
	}
	if *until != "" {
		t, err := parseTime("until", *until)
		if err != nil {
			return fail("%v", err)
		}
		opts.EndMS = t.UnixMilli()
	}

	var feed func(apply func([]events.PresenceEvent)) (backtest.Input, error)
	if *jsonl != "" {
		var r io.Reader = os.Stdin
		if *jsonl != "-" {
			f, err := os.Open(*jsonl)
			if err != nil {
				return fail("%v", err)
			}
			defer f.Close()
			r = f
		}
		feed = func(apply func([]events.PresenceEvent)) (backtest.Input, error) { return backtest.ReadJSONL(r, apply) }
	} else {
		from, err := parseTime("from", *fromS)
		if err != nil {
			return fail("%v", err)
		}
		to := time.Now()
		if *toS != "" {
			if to, err = parseTime("to", *toS); err != nil {
				return fail("%v", err)
			}
		}
		if !to.After(from) {
			return fail("--to %s is not after --from %s", to.Format(time.RFC3339), from.Format(time.RFC3339))
		}
		if opts.EndMS == 0 {
			opts.EndMS = to.UnixMilli()
		}
		if *natsURL != "" {
			cand.NATS.URL = *natsURL
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		nc, err := natsconn.Connect(cand.NATS, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			return fail("%v", err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fail("jetstream: %v", err)
		}
		parts := cand.Evaluator.Partitions
		feed = func(apply func([]events.PresenceEvent)) (backtest.Input, error) {
			n, skipped, err := evaluator.ReadPresence(ctx, js, from, to, parts, apply)
			in := backtest.Input{Lines: n + skipped, Skipped: skipped}
			if skipped > 0 {
				in.FirstError = "events that do not decode (the live evaluator dead-letters them)"
			}
			return in, err
		}
	}
	res, err := backtest.Run(candSim, baseSim, opts, feed)
	if err != nil {
		fmt.Fprintf(stderr, "fleetwatch-evaluator backtest: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return 1
		}
		return 0
	}
	res.Print(stdout)
	return 0
}

// newSim is a simulation of cfg: its tracker, tick and maintenance windows.
func newSim(name string, cfg evaluator.Config) (*backtest.Sim, error) {
	tr, err := cfg.NewTracker()
	if err != nil {
		return nil, err
	}
	sim := backtest.NewSim(name, tr, cfg.TickInterval())
	ws, err := silencestore.CompileWindows(cfg.Silences.Windows, "evaluator.silences.windows")
	if err != nil {
		return nil, err
	}
	if len(ws) > 0 {
		sim.SetSilences(func(now time.Time) ([]silence.Silence, time.Time) { return silencestore.Expand(ws, now) })
	}
	return sim, nil
}

const generateUsage = `Usage: fleetwatch-evaluator generate --devices N --events N [--seed N] > history.jsonl

Writes a synthetic presence history as JSON lines, in broker-time order: every
device connects, then alternates connections (exponential, mean --up) and
outages: --blip-percent of them blips (mean --blip), the others mean --down;
1% of the devices flap (50 times shorter), 1% of the events are duplicated. The same flags always write the same file. For
backtest benchmarks and tests.

Flags:
`

func generateMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleetwatch-evaluator generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := backtest.GenOptions{}
	fs.IntVar(&o.Devices, "devices", 10_000, "devices")
	fs.IntVar(&o.Events, "events", 1_000_000, "events (lines)")
	fs.Uint64Var(&o.Seed, "seed", 1, "random seed")
	up := fs.Duration("up", 2*time.Hour, "mean connection duration")
	blips := fs.Int("blip-percent", 90, "percentage of the outages that are blips")
	blip := fs.Duration("blip", 3*time.Second, "mean blip duration")
	down := fs.Duration("down", 15*time.Minute, "mean duration of the other outages")
	fs.Usage = func() {
		fmt.Fprint(stderr, generateUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || o.Devices < 1 || o.Events < 1 || *up <= 0 || *down <= 0 || *blip <= 0 || *blips < 1 || *blips > 100 {
		fmt.Fprintln(stderr, "fleetwatch-evaluator generate: --devices, --events, --up, --blip and --down must be positive, --blip-percent 1 to 100; no arguments")
		return 2
	}
	o.UpMS, o.DownMS, o.BlipMS, o.BlipPercent = float64(up.Milliseconds()), float64(down.Milliseconds()), float64(blip.Milliseconds()), *blips
	if err := backtest.Generate(stdout, o); err != nil {
		fmt.Fprintf(stderr, "fleetwatch-evaluator generate: %v\n", err)
		return 1
	}
	return 0
}
