package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Start-up on a JetStream cluster: creating an R3 stream or bucket right
// after the cluster formed (or while a node restarts) can time out, find no
// peers for placement yet, or not find the stream it just created.
// OpenRetrying retries such transient failures with backoff; anything else
// (a bucket that exists with an incompatible configuration, replicas on a
// server that is not clustered, JetStream disabled) fails at once.
const (
	// openAttemptTimeout bounds one attempt to create or open something.
	openAttemptTimeout = 10 * time.Second
	// openRetryFirst and openRetryMax are the backoff between attempts.
	openRetryFirst = 250 * time.Millisecond
	openRetryMax   = 5 * time.Second
	// openRetryFor bounds how long it is waited for in all.
	openRetryFor = 2 * time.Minute
)

// JetStream API error codes of transient cluster conditions.
const (
	jsErrNoPeers         jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsErrClusterNotAvail jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	jsErrNotLeader       jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
	jsErrStreamOffline   jetstream.ErrorCode = 10118 // stream is offline
	jsErrStreamOfflineF  jetstream.ErrorCode = 10194 // stream is offline: <reason>
)

// TransientError reports whether a failure to create or open a stream or
// bucket may go away by itself while a JetStream cluster settles.
func TransientError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jsErrNoPeers, jsErrClusterNotAvail, jsErrNotLeader, jsErrStreamOffline, jsErrStreamOfflineF,
			jetstream.JSErrCodeStreamNotFound:
			return true
		}
	}
	return false
}

// OpenRetrying runs open (one attempt, bounded by 10 s) until it succeeds,
// retrying transient failures (TransientError) with backoff for at most 2
// minutes and while ctx lasts, with a log line per retry; what names the
// stream or bucket in the logs and the error.
func OpenRetrying(ctx context.Context, log *slog.Logger, what string, open func(ctx context.Context) error) error {
	giveUp := time.Now().Add(openRetryFor)
	wait := openRetryFirst
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, openAttemptTimeout)
		err := open(actx)
		cancel()
		switch {
		case err == nil:
			if attempt > 1 {
				log.Info("start-up: "+what+" is open", "attempts", attempt)
			}
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case !TransientError(err):
			return err
		case time.Now().Add(wait).After(giveUp):
			return fmt.Errorf("%s: still failing after %s (%d attempts), check that the NATS cluster is up and has enough JetStream peers for the configured replicas: %w",
				what, openRetryFor, attempt, err)
		}
		log.Warn("start-up: waiting for "+what+", will retry", "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, openRetryMax)
	}
}
