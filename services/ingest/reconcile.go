package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/ingest/reconcile"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// reconciler runs reconcile passes against the EMQX REST API.
type reconciler struct {
	s       *Service
	r       *reconcile.Reconciler
	trigger chan struct{} // a pass now (a node came back)

	mu     sync.Mutex
	online map[string]struct{} // devices last stored as connected by this replica (EMQX sources)
	full   bool                // online hit MaxTracked
	last   reconcile.Report
}

func newReconciler(s *Service, cfg ReconcileConfig) (*reconciler, error) {
	secret, err := natsconn.Secret("ingest.reconcile.api_secret", cfg.APISecretFile, cfg.APISecretEnv)
	if err != nil {
		return nil, err
	}
	api, err := reconcile.NewAPI(cfg.URL, cfg.APIKey, secret, &http.Client{Timeout: cfg.Timeout})
	if err != nil {
		return nil, err
	}
	rc := &reconciler{s: s, trigger: make(chan struct{}, 1), online: map[string]struct{}{}}
	rc.r = &reconcile.Reconciler{Lister: api, Store: jsStore{s: s, rc: rc}, PageLimit: cfg.PageLimit, Now: s.now}
	if cfg.MaxTracked > 0 {
		rc.r.Online = rc.onlineIDs
	}
	return rc, nil
}

// stored records what this replica stored for a device.
func (rc *reconciler) stored(ev events.PresenceEvent) {
	if !strings.HasPrefix(ev.Source, "emqx_") {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if ev.Kind == events.KindDisconnected {
		delete(rc.online, ev.DeviceID)
		return
	}
	if len(rc.online) >= rc.s.cfg.Reconcile.MaxTracked {
		if !rc.full {
			rc.full = true
			rc.s.log.Warn("reconcile: ingest.reconcile.max_tracked reached; devices beyond it are not checked for absence",
				"max_tracked", rc.s.cfg.Reconcile.MaxTracked)
		}
		return
	}
	rc.online[ev.DeviceID] = struct{}{}
}

func (rc *reconciler) onlineIDs() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]string, 0, len(rc.online))
	for id := range rc.online {
		out = append(out, id)
	}
	return out
}

// now asks for a pass as soon as possible.
func (rc *reconciler) now() {
	select {
	case rc.trigger <- struct{}{}:
	default:
	}
}

// loop runs a pass every Interval and on trigger, until ctx ends.
func (rc *reconciler) loop(ctx context.Context) {
	t := time.NewTicker(rc.s.cfg.Reconcile.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-rc.trigger:
		}
		rep, err := rc.r.Run(ctx)
		rc.mu.Lock()
		rc.last = rep
		rc.mu.Unlock()
		for kind, n := range map[string]int{"connected": rep.Connected, "disconnected": rep.Disconnected, "absent": rep.Absent} {
			if n > 0 {
				rc.s.metrics.reconciled.Add(ctx, int64(n), metric.WithAttributes(attribute.String("kind", kind)))
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				rc.s.log.Warn("reconcile pass failed; the next one starts over", "err", err, "listed", rep.Listed)
			}
			continue
		}
		rc.s.log.Info("reconcile pass done", "listed", rep.Listed, "connected", rep.Connected,
			"disconnected", rep.Disconnected, "absent", rep.Absent)
	}
}

// jsStore is reconcile's view of PRESENCE.
type jsStore struct {
	s  *Service
	rc *reconciler
}

func (j jsStore) Last(ctx context.Context, deviceID string) (events.PresenceEvent, bool, error) {
	st, err := j.s.js.Stream(ctx, events.StreamPresence)
	if err != nil {
		return events.PresenceEvent{}, false, fmt.Errorf("reconcile: %w", err)
	}
	m, err := st.GetLastMsgForSubject(ctx, events.PresenceSubject(deviceID, j.s.cfg.Partitions))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return events.PresenceEvent{}, false, nil
	}
	if err != nil {
		return events.PresenceEvent{}, false, fmt.Errorf("reconcile: last event of %q: %w", deviceID, err)
	}
	var ev events.PresenceEvent
	if err := jsonUnmarshal(m.Data, &ev); err != nil {
		return events.PresenceEvent{}, false, fmt.Errorf("reconcile: last event of %q: %w", deviceID, err)
	}
	return ev, true, nil
}

func (j jsStore) Publish(ctx context.Context, ev events.PresenceEvent) error {
	ctx, span := j.s.tracer.Start(ctx, "ingest reconcile", trace.WithAttributes(
		attribute.String("fleetwatch.event_id", ev.ID), attribute.String("fleetwatch.kind", string(ev.Kind))))
	defer span.End()
	ack, ok := j.s.publishEvent(ctx, ev)
	if !ok {
		return fmt.Errorf("reconcile: publish corrective event: %w", context.Cause(ctx))
	}
	if ack.Duplicate {
		j.s.duplicates.Add(1)
	} else {
		j.s.published.Add(1)
	}
	j.s.log.Info("reconcile: corrective event stored", "device", ev.DeviceID, "kind", ev.Kind, "raw_reason", ev.RawReason,
		"id", ev.ID, "duplicate", ack.Duplicate)
	j.rc.stored(ev)
	return nil
}

// ReconcileNow asks for a reconcile pass as soon as possible (no-op when
// reconciliation is off).
func (s *Service) ReconcileNow() {
	if s.reconciler != nil {
		s.reconciler.now()
	}
}

// LastReconcile is the report of the last completed or failed pass.
func (s *Service) LastReconcile() reconcile.Report {
	if s.reconciler == nil {
		return reconcile.Report{}
	}
	s.reconciler.mu.Lock()
	defer s.reconciler.mu.Unlock()
	return s.reconciler.last
}
