// Package api is the evaluator's HTTP API (JSON, documented in
// docs/evaluator-api.md): device state by id, devices filtered by status and
// labels with counts, active alerts and groups, silences CRUD, the dynamic
// inventory, health and readiness. State-changing calls need the bearer
// token; reads do not.
//
// Queries run on the goroutine that owns the tracker (Backend.Query): the
// tracker is single-owner and never shared, so answers are exact and no
// copy of the state is kept; a query waits at most one batch.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/inventorykv"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// Backend is the evaluator as the API sees it.
type Backend interface {
	// Query runs fn on the goroutine that owns the tracker and returns
	// once it ran; an error when the evaluator is not ready or ctx ends
	// first (fn then does not run, or its result is dropped).
	Query(ctx context.Context, fn func(tr *tracker.Tracker)) error
	// QueryDevice runs fn on the tracker that holds deviceID. With
	// partition leases, an error with an HTTPStatus() int method (409)
	// when another replica owns the device's lease partition.
	QueryDevice(ctx context.Context, deviceID string, fn func(tr *tracker.Tracker)) error
	// Ready returns nil while the evaluator is consuming live events.
	Ready() error
	// ConfigSilences returns the silences of the configured maintenance
	// windows in force at now or next.
	ConfigSilences(now time.Time) []silence.Silence
}

// SilenceStore stores silences (silencestore.Store).
type SilenceStore interface {
	List(ctx context.Context) ([]silence.Silence, error)
	Get(ctx context.Context, id string) (silence.Silence, error)
	Create(ctx context.Context, s silence.Silence) error
	Put(ctx context.Context, s silence.Silence) error
	Delete(ctx context.Context, id string) error
}

// InventoryStore stores the dynamic inventory (inventorykv.Store).
type InventoryStore interface {
	Get(ctx context.Context, deviceID string) (map[string]string, error)
	Put(ctx context.Context, deviceID string, labels map[string]string) error
	Delete(ctx context.Context, deviceID string) error
}

var (
	_ SilenceStore   = (*silencestore.Store)(nil)
	_ InventoryStore = (*inventorykv.Store)(nil)
)

// Deps are the API's collaborators.
type Deps struct {
	Backend   Backend
	Silences  SilenceStore
	Inventory InventoryStore
	Logger    *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Server serves the API.
type Server struct {
	cfg   Config
	deps  Deps
	token atomic.Pointer[[sha256.Size]byte]
	log   *slog.Logger
	now   func() time.Time
}

// New returns a Server; token is the bearer token of state-changing calls
// ("" refuses them).
func New(cfg Config, token string, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate("api"); err != nil {
		return nil, err
	}
	if deps.Backend == nil || deps.Silences == nil || deps.Inventory == nil {
		return nil, errors.New("api: Deps.Backend, Silences and Inventory are required")
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger, now: deps.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.SetToken(token)
	return s, nil
}

// SetToken replaces the bearer token ("" refuses state-changing calls).
func (s *Server) SetToken(token string) {
	if token == "" {
		s.token.Store(nil)
		return
	}
	h := sha256.Sum256([]byte(token))
	s.token.Store(&h)
}

// Start listens on cfg.Listen and serves until ctx ends; it returns the
// bound address.
func (s *Server) Start(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("api listen on %s: %w", s.cfg.Listen, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: s.cfg.Timeout + 30*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr().String(), nil
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, methods map[string]http.HandlerFunc) {
		allow := slices.Sorted(func(yield func(string) bool) {
			for m := range methods {
				if !yield(m) {
					return
				}
			}
		})
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			h, ok := methods[r.Method]
			if !ok && r.Method == http.MethodHead {
				h, ok = methods[http.MethodGet]
			}
			if !ok {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
				return
			}
			h(w, r)
		})
	}
	route("/healthz", map[string]http.HandlerFunc{"GET": s.healthz})
	route("/readyz", map[string]http.HandlerFunc{"GET": s.readyz})
	route("/api/v1/devices", map[string]http.HandlerFunc{"GET": s.listDevices})
	route("/api/v1/devices/{id...}", map[string]http.HandlerFunc{"GET": s.getDevice})
	route("/api/v1/alerts", map[string]http.HandlerFunc{"GET": s.listAlerts})
	route("/api/v1/groups", map[string]http.HandlerFunc{"GET": s.listGroups})
	route("/api/v1/silences", map[string]http.HandlerFunc{"GET": s.listSilences, "POST": s.auth(s.createSilence)})
	route("/api/v1/silences/{id}", map[string]http.HandlerFunc{"GET": s.getSilence, "PUT": s.auth(s.putSilence), "DELETE": s.auth(s.deleteSilence)})
	route("/api/v1/inventory/{id...}", map[string]http.HandlerFunc{"GET": s.getInventory, "PUT": s.auth(s.putInventory), "DELETE": s.auth(s.deleteInventory)})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s (see docs/evaluator-api.md)", r.URL.Path))
	})
	return mux
}

// auth wraps a state-changing handler: it needs "Authorization: Bearer
// <token>", compared in constant time.
func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		want := s.token.Load()
		if want == nil {
			writeError(w, http.StatusForbidden, "state-changing calls are disabled: no API token is configured (set evaluator.api.token_file or token_env)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fleetwatch-evaluator"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token: send the header Authorization: Bearer <token>")
			return
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fleetwatch-evaluator", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid bearer token")
			return
		}
		h(w, r)
	}
}
