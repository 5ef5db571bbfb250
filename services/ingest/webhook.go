package ingest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
	"github.com/fleetwatch/fleetwatch/services/ingest/emqx"
)

// webhook is the HTTP endpoint for EMQX's v4 web_hook plugin and v5 HTTP
// actions. A body is answered only once its fate is durable:
//
//	200 {"outcome":"published"|"duplicate","id":…}  stored in PRESENCE
//	200 {"outcome":"ignored","reason":…}             not presence (other hook actions)
//	400 {"error":…,"outcome":"deadlettered"}         stored in DEADLETTER with the reason
//	413 {"error":…,"outcome":"deadlettered"}         too large (the first max_body_bytes kept)
//	401 / 405 / 415 {"error":…}                       refused, nothing stored
//	503 {"error":…}                                   JetStream did not acknowledge: EMQX retries
type webhook struct {
	s     *Service
	cfg   WebhookConfig
	token string // never logged
	srv   *http.Server

	mu       sync.Mutex
	listener net.Listener
}

func newWebhook(s *Service, cfg WebhookConfig) (*webhook, error) {
	token, err := natsconn.Secret("ingest.webhook.token", cfg.TokenFile, cfg.TokenEnv)
	if err != nil {
		return nil, err
	}
	if (cfg.TokenFile != "" || cfg.TokenEnv != "") && token == "" {
		return nil, errors.New("ingest.webhook.token is empty: put the shared secret in the file or variable")
	}
	w := &webhook{s: s, cfg: cfg, token: token}
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.Path, w.serve)
	w.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return w, nil
}

// WebhookHandler returns the endpoint's handler (for embedding in another server).
func (s *Service) WebhookHandler() http.Handler {
	if s.webhook == nil {
		return nil
	}
	return http.HandlerFunc(s.webhook.serve)
}

// WebhookAddr is the webhook's listening address ("" when off or not yet
// listening).
func (s *Service) WebhookAddr() string {
	if s.webhook == nil {
		return ""
	}
	return s.webhook.addr()
}

func (w *webhook) addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.listener == nil {
		return ""
	}
	return w.listener.Addr().String()
}

func (w *webhook) start() error {
	ln, err := net.Listen("tcp", w.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ingest.webhook.listen: %w", err)
	}
	w.mu.Lock()
	w.listener = ln
	w.mu.Unlock()
	go func() {
		var err error
		if w.cfg.CertFile != "" {
			err = w.srv.ServeTLS(ln, w.cfg.CertFile, w.cfg.KeyFile)
		} else {
			err = w.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.s.log.Error("webhook server stopped", "err", err)
		}
	}()
	w.s.log.Info("webhook listening", "addr", ln.Addr().String(), "path", w.cfg.Path, "auth", w.token != "")
	return nil
}

// stop stops accepting and waits up to grace for requests in flight.
func (w *webhook) stop(grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		_ = w.srv.Close()
	}
	w.mu.Lock()
	w.listener = nil
	w.mu.Unlock()
}

// authorized checks the shared secret in constant time.
func (w *webhook) authorized(r *http.Request) bool {
	if w.token == "" {
		return true
	}
	got := r.Header.Get(w.cfg.AuthHeader)
	if strings.EqualFold(w.cfg.AuthHeader, "Authorization") {
		scheme, tok, ok := strings.Cut(got, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return false
		}
		got = strings.TrimSpace(tok)
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(w.token)) == 1
}

func (w *webhook) serve(rw http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method != http.MethodPost:
		rw.Header().Set("Allow", http.MethodPost)
		writeJSON(rw, http.StatusMethodNotAllowed, map[string]string{"error": "use POST"})
		return
	case !w.authorized(r):
		w.s.log.Warn("webhook request refused: missing or wrong token", "remote", r.RemoteAddr)
		writeJSON(rw, http.StatusUnauthorized, map[string]string{"error": "missing or wrong token in " + w.cfg.AuthHeader})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.Contains(strings.ToLower(ct), "json") && !strings.HasPrefix(ct, "text/plain") {
		writeJSON(rw, http.StatusUnsupportedMediaType, map[string]string{"error": "content type " + ct + " is not JSON: set the action's Content-Type to application/json"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, w.cfg.MaxBodyBytes+1))
	if err != nil {
		writeJSON(rw, http.StatusBadRequest, map[string]string{"error": "read body: " + err.Error()})
		return
	}
	status := http.StatusBadRequest
	parse := func(in input, rcv time.Time) (events.PresenceEvent, error) {
		ev, err := emqx.ParseWebhook(in.payload, rcv)
		return ev, ignoring(err, emqx.ErrNotPresence)
	}
	if int64(len(body)) > w.cfg.MaxBodyBytes {
		status = http.StatusRequestEntityTooLarge
		limit := w.cfg.MaxBodyBytes
		body = body[:limit]
		parse = func(input, time.Time) (events.PresenceEvent, error) {
			return events.PresenceEvent{}, fmt.Errorf("%w: body exceeds ingest.webhook.max_body_bytes (%d); the first %d bytes are kept", emqx.ErrWebhook, limit, limit)
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), w.cfg.AckTimeout)
	defer cancel()
	w.s.mu.Lock()
	if w.s.stopping {
		w.s.mu.Unlock()
		writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": "ingest is stopping: retry"})
		return
	}
	w.s.wg.Add(1)
	w.s.mu.Unlock()
	defer w.s.wg.Done()
	select {
	case w.s.inflight <- struct{}{}:
	case <-ctx.Done():
		writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": "ingest is busy: retry"})
		return
	}
	w.s.metrics.inFlight.Add(ctx, 1)
	defer func() { <-w.s.inflight; w.s.metrics.inFlight.Add(context.Background(), -1) }()

	res := w.s.process(ctx, input{source: SourceEMQXWebhook, topic: r.URL.Path, payload: body}, parse, true)
	switch {
	case !res.stored:
		writeJSON(rw, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("jetstream did not acknowledge within %s: retry", w.cfg.AckTimeout)})
	case res.outcome == outcomeDeadLettered:
		writeJSON(rw, status, map[string]string{"error": res.reason, "outcome": res.outcome})
	case res.outcome == outcomeIgnored:
		writeJSON(rw, http.StatusOK, map[string]string{"outcome": res.outcome, "reason": res.reason})
	default:
		writeJSON(rw, http.StatusOK, map[string]string{"outcome": res.outcome, "id": res.id})
	}
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}
