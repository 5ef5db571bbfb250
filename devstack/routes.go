package devstack

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// maxOutage bounds a simulated outage requested through the dev API.
const maxOutage = time.Hour

// routes serves the chat stand-ins and inbox (chatsim) plus the dev API:
// GET /api/fleet (simulator counts) and POST /api/outage (drop devices).
func (st *Stack) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/fleet", st.handleFleet)
	mux.HandleFunc("POST /api/outage", st.handleOutage)
	mux.Handle("/", st.chat)
	return mux
}

func (st *Stack) handleFleet(w http.ResponseWriter, _ *http.Request) {
	if st.sim == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no device simulator runs in this stack (devices = 0)"})
		return
	}
	writeJSON(w, http.StatusOK, st.sim.Stats())
}

// handleOutage drops devices: ?site=a (default all sites), fraction=0.5
// (default 1), for=2m (default 2m, at most 1h).
func (st *Stack) handleOutage(w http.ResponseWriter, r *http.Request) {
	if st.sim == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no device simulator runs in this stack (devices = 0)"})
		return
	}
	q := r.URL.Query()
	fraction := 1.0
	if v := q.Get("fraction"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "fraction must be a number in (0, 1], e.g. 0.5"})
			return
		}
		fraction = f
	}
	away := 2 * time.Minute
	if v := q.Get("for"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxOutage {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "for must be a duration in (0, 1h], e.g. 2m"})
			return
		}
		away = d
	}
	site := q.Get("site")
	if len(site) > 1 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "site must be one letter (a, b, ...) or empty for all sites"})
		return
	}
	n := st.sim.Outage(st.runCtx, site, fraction, away)
	writeJSON(w, http.StatusOK, map[string]any{"dropped": n, "site": site, "for": away.String()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
