package archiver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
	"github.com/fleetwatch/fleetwatch/services/archiver/sink"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReplayOptions choose what Replay re-archives.
type ReplayOptions struct {
	// Streams to replay (presence, alerts, deliveries); empty: the
	// configured streams.
	Streams []string
	// From and To bound the messages' JetStream timestamps: [From, To).
	// A zero To means the time Replay starts.
	From, To time.Time
	// FetchWait bounds one fetch (0: the config's batch_wait).
	FetchWait time.Duration
}

// ReplayResult counts what Replay did for one stream.
type ReplayResult struct {
	Stream string
	// Messages read in the window; Rows inserted; Skipped could not be
	// decoded (they went to DEADLETTER when first archived).
	Messages, Rows, Skipped int
}

// Replay re-archives a time range of the streams from JetStream: an
// ordered (ephemeral, flow-controlled) consumer per stream starts at From,
// and the messages stored before To are inserted in batches of
// cfg.BatchSize, exactly as the archiver inserts them. Rows already in
// ClickHouse are inserted again and collapse like any redelivery (see
// package schema), so a replay can be repeated or interrupted at will.
// It migrates the schema first, and does not touch the durable consumers.
func Replay(ctx context.Context, cfg Config, deps Deps, opts ReplayOptions) ([]ReplayResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil {
		return nil, errors.New("archiver: Deps.NATS is nil: pass a connected *nats.Conn")
	}
	streams := opts.Streams
	if len(streams) == 0 {
		streams = cfg.Streams
	}
	for _, s := range streams {
		if !slices.Contains(AllStreams(), s) {
			return nil, fmt.Errorf("replay stream %q: use %s", s, strings.Join(AllStreams(), ", "))
		}
	}
	if opts.To.IsZero() {
		opts.To = time.Now()
	}
	if !opts.From.Before(opts.To) {
		return nil, fmt.Errorf("replay window [%s, %s) is empty: set from before to", opts.From.UTC().Format(time.RFC3339), opts.To.UTC().Format(time.RFC3339))
	}
	if opts.FetchWait <= 0 {
		opts.FetchWait = cfg.BatchWait
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("archiver: jetstream: %w", err)
	}
	ch, err := openClickHouse(cfg.ClickHouse, 1)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if _, err := schema.Migrate(ctx, ch, cfg.ClickHouse.Database, cfg.ClickHouse.migrateOptions(logger)); err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	w := sink.NewWriter(ch, cfg.ClickHouse.Database)
	var out []ReplayResult
	for _, name := range streams {
		var res ReplayResult
		switch name {
		case StreamPresence:
			res, err = replayStream(ctx, js, w, name, sink.NewPresenceRows(), cfg, opts, logger)
		case StreamAlerts:
			res, err = replayStream(ctx, js, w, name, sink.NewAlertRows(), cfg, opts, logger)
		default:
			res, err = replayStream(ctx, js, w, name, sink.NewDeliveryRows(), cfg, opts, logger)
		}
		out = append(out, res)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func replayStream[E event](ctx context.Context, js jetstream.JetStream, w *sink.Writer, name string, rows *sink.Rows[E],
	cfg Config, opts ReplayOptions, logger *slog.Logger) (ReplayResult, error) {
	spec := streamSpecs[name]
	res := ReplayResult{Stream: name}
	start := opts.From
	cons, err := js.OrderedConsumer(ctx, spec.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{spec.filter},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &start,
	})
	if err != nil {
		return res, fmt.Errorf("replay %s: ordered consumer: %w", spec.stream, err)
	}
	flush := func() error {
		if rows.Len() == 0 {
			return nil
		}
		ictx, cancel := context.WithTimeout(ctx, cfg.InsertTimeout)
		defer cancel()
		if err := w.Insert(ictx, rows); err != nil {
			return fmt.Errorf("replay %s: %w", spec.stream, err)
		}
		res.Rows += rows.Len()
		rows.Reset()
		return nil
	}
	for {
		batch, err := cons.Fetch(cfg.BatchSize, jetstream.FetchMaxWait(opts.FetchWait))
		if err != nil {
			return res, fmt.Errorf("replay %s: fetch: %w", spec.stream, err)
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return res, fmt.Errorf("replay %s: %w", spec.stream, err)
			}
			if !md.Timestamp.Before(opts.To) {
				done = true
				continue // drain the batch; nothing to ack on an ordered consumer
			}
			res.Messages++
			e, err := decode[E](nil, m.Data())
			if err == nil {
				err = rows.Add(e)
			}
			if err != nil {
				res.Skipped++
				logger.Warn("replay skips a message that cannot be archived", "stream", spec.stream, "seq", md.Sequence.Stream, "reason", err)
			}
			if md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return res, fmt.Errorf("replay %s: fetch: %w", spec.stream, err)
		}
		if err := flush(); err != nil {
			return res, err
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if done || got == 0 {
			logger.Info("replayed", "stream", spec.stream, "messages", res.Messages, "rows", res.Rows, "skipped", res.Skipped)
			return res, nil
		}
	}
}
