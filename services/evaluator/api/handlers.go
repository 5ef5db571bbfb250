package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/inventorykv"
	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// Device is a device in API answers.
type Device struct {
	DeviceID      string         `json:"device_id"`
	Status        tracker.Status `json:"status"`
	Alerting      bool           `json:"alerting"`
	HandedOver    bool           `json:"handed_over,omitempty"`
	Node          string         `json:"node"`
	ConnectedAtMS int64          `json:"connected_at_ms"`
	// ConnVersion keys the connection where the source has no
	// connected_at (AWS IoT versionNumber + 1, Sparkplug bdSeq + 1).
	ConnVersion int64  `json:"conn_version,omitempty"`
	SinceMS     int64  `json:"since_ms"`
	Reason      string `json:"reason,omitempty"`
	// Flapping says the device is in a flapping episode (FlapCount
	// disconnects): one device_flapping alert, its own alerts held.
	Flapping  bool `json:"flapping,omitempty"`
	FlapCount int  `json:"flap_count,omitempty"`
	// Inhibited says its alert is folded into a group_outage.
	Inhibited bool              `json:"inhibited,omitempty"`
	Labels    map[string]string `json:"labels"`
}

// DeviceList answers GET /api/v1/devices and /api/v1/alerts.
type DeviceList struct {
	// Counts are the devices matching the label matchers, by status, and
	// their total.
	Counts map[tracker.Status]int `json:"counts"`
	Total  int                    `json:"total"`
	// Matched is how many also match the status filter (all pages).
	Matched int `json:"matched"`
	// Devices is this page, sorted by device id.
	Devices []Device `json:"devices"`
	// NextAfter, when set, is the after= of the next page.
	NextAfter string `json:"next_after,omitempty"`
}

// Group is an open alert group in API answers.
type Group struct {
	Key string `json:"key"`
	// Kind is the kind of the group's alerts: device_offline,
	// device_flapping or group_outage.
	Kind string `json:"kind"`
	// Tier is the escalation tier (0: the route's own group).
	Tier int `json:"tier,omitempty"`
	// InhibitedBy is set on the (recorded, not delivered) copy of a group
	// whose devices are folded into a group_outage: its fingerprint.
	InhibitedBy string            `json:"inhibited_by,omitempty"`
	Labels      map[string]string `json:"labels"`
	Receivers   []string          `json:"receivers"`
	Severity    string            `json:"severity"`
	Firing      int               `json:"firing"`
	Resolved    int               `json:"resolved_pending"`
	Notified    bool              `json:"notified"`
	Seq         uint32            `json:"notifications"`
	StartsAtMS  int64             `json:"starts_at_ms"`
	LastMS      int64             `json:"last_notified_ms,omitempty"`
	NextMS      int64             `json:"next_flush_ms,omitempty"`
	Devices     []string          `json:"devices"`
}

// Silence is a silence in API answers.
type Silence struct {
	silence.Silence
	// Status is active, pending (not started) or expired, at the time of
	// the answer.
	Status string `json:"status"`
	// Source is api (stored in the bucket) or config (a maintenance
	// window).
	Source string `json:"source"`
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.deps.Backend.Ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// query runs fn on the tracker's goroutine (the one holding deviceID when
// it is not ""), answering 503 when it cannot, or the error's own status
// (409: another replica owns the device's lease partition).
func (s *Server) query(w http.ResponseWriter, r *http.Request, deviceID string, fn func(tr *tracker.Tracker)) bool {
	if err := s.deps.Backend.Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "the evaluator is not ready: "+err.Error())
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
	defer cancel()
	var err error
	if deviceID != "" {
		err = s.deps.Backend.QueryDevice(ctx, deviceID, fn)
	} else {
		err = s.deps.Backend.Query(ctx, fn)
	}
	if err != nil {
		code := http.StatusServiceUnavailable
		var hs interface{ HTTPStatus() int }
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("the evaluator did not answer within %s (busy publishing or stalled)", s.cfg.Timeout)
		case errors.As(err, &hs):
			code = hs.HTTPStatus()
		}
		writeError(w, code, err.Error())
		return false
	}
	return true
}

func deviceOf(st tracker.DeviceState, ls map[string]string) Device {
	if ls == nil {
		ls = map[string]string{}
	}
	flaps := 0
	if st.Flapping {
		flaps = st.FlapCount
	}
	return Device{
		DeviceID: st.DeviceID, Status: st.Status(), Alerting: st.Alerting, HandedOver: st.HandedOver, Node: st.Node,
		ConnectedAtMS: st.ConnectedAtMS, ConnVersion: st.ConnVersion, SinceMS: st.SinceMS, Reason: string(st.Reason), Flapping: st.Flapping,
		FlapCount: flaps, Inhibited: st.Inhibited, Labels: ls,
	}
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var (
		d  Device
		ok bool
	)
	if !s.query(w, r, id, func(tr *tracker.Tracker) {
		var st tracker.DeviceState
		if st, ok = tr.Device(id); ok {
			d = deviceOf(st, tr.Labels(id))
		}
	}) {
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("device %q is not known to this evaluator (never seen in PRESENCE)", id))
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// listQuery is a parsed device list request.
type listQuery struct {
	statuses []tracker.Status // empty: all
	matchers route.Matchers
	limit    int
	after    string
}

func (s *Server) parseList(r *http.Request, allowStatus bool) (listQuery, error) {
	q := r.URL.Query()
	var lq listQuery
	for k := range q {
		switch k {
		case "state", "match", "limit", "after":
			if k == "state" && !allowStatus {
				return lq, fmt.Errorf("unknown query parameter %q: use match, limit or after", k)
			}
		default:
			return lq, fmt.Errorf("unknown query parameter %q: use state, match, limit or after", k)
		}
	}
	for _, v := range q["state"] {
		for st := range strings.SplitSeq(v, ",") {
			if !slices.Contains(tracker.Statuses, tracker.Status(st)) {
				return lq, fmt.Errorf("state %q: use online, pending, offline or unknown (several: state=offline,pending)", st)
			}
			lq.statuses = append(lq.statuses, tracker.Status(st))
		}
	}
	if ms := q["match"]; len(ms) > 0 {
		m, err := route.ParseMatchers(ms)
		if err != nil {
			return lq, fmt.Errorf("match: %w", err)
		}
		lq.matchers = m
	}
	lq.limit = min(100, s.cfg.MaxLimit)
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.MaxLimit {
			return lq, fmt.Errorf("limit %q: use 1 to %d", v, s.cfg.MaxLimit)
		}
		lq.limit = n
	}
	lq.after = q.Get("after")
	return lq, nil
}

// page keeps the smallest ids above after, at most limit+1 of them.
type page struct {
	ids   []string
	limit int
	after string
}

func (p *page) offer(id string) {
	if id <= p.after && p.after != "" {
		return
	}
	p.ids = append(p.ids, id)
	if len(p.ids) >= 4*(p.limit+1) {
		p.trim()
	}
}

func (p *page) trim() {
	slices.Sort(p.ids)
	if len(p.ids) > p.limit+1 {
		p.ids = p.ids[:p.limit+1]
	}
}

// list scans every device on the tracker's goroutine: O(devices).
func (s *Server) list(w http.ResponseWriter, r *http.Request, lq listQuery, alertingOnly bool) {
	out := DeviceList{Counts: map[tracker.Status]int{}}
	for _, st := range tracker.Statuses {
		out.Counts[st] = 0
	}
	if !s.query(w, r, "", func(tr *tracker.Tracker) {
		p := page{limit: lq.limit, after: lq.after}
		tr.EachDevice(func(v *tracker.DeviceView) bool {
			if alertingOnly && !v.Alerting() {
				return true
			}
			if len(lq.matchers) > 0 && !lq.matchers.Matches(v.Label) {
				return true
			}
			st := v.Status()
			out.Counts[st]++
			out.Total++
			if len(lq.statuses) > 0 && !slices.Contains(lq.statuses, st) {
				return true
			}
			out.Matched++
			p.offer(v.ID())
			return true
		})
		p.trim()
		if len(p.ids) > lq.limit {
			p.ids = p.ids[:lq.limit]
			out.NextAfter = p.ids[len(p.ids)-1]
		}
		out.Devices = make([]Device, 0, len(p.ids))
		for _, id := range p.ids {
			st, _ := tr.Device(id)
			out.Devices = append(out.Devices, deviceOf(st, tr.Labels(id)))
		}
	}) {
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	lq, err := s.parseList(r, true)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.list(w, r, lq, false)
}

func (s *Server) listAlerts(w http.ResponseWriter, r *http.Request) {
	lq, err := s.parseList(r, false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.list(w, r, lq, true)
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	n := 20
	for k := range r.URL.Query() {
		if k != "devices" {
			return400(w, fmt.Sprintf("unknown query parameter %q: use devices", k))
			return
		}
	}
	if v := r.URL.Query().Get("devices"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > s.cfg.MaxLimit {
			return400(w, fmt.Sprintf("devices %q: use 0 to %d (device ids listed per group)", v, s.cfg.MaxLimit))
			return
		}
	}
	var gs []tracker.GroupState
	if !s.query(w, r, "", func(tr *tracker.Tracker) { gs = tr.GroupStates(n) }) {
		return
	}
	out := struct {
		Groups []Group `json:"groups"`
	}{Groups: make([]Group, 0, len(gs))}
	for _, g := range gs {
		if g.Labels == nil {
			g.Labels = map[string]string{}
		}
		out.Groups = append(out.Groups, Group{Key: g.Key, Kind: string(g.Kind), Tier: g.Tier, InhibitedBy: g.InhibitedBy, Labels: g.Labels, Receivers: g.Receivers, Severity: string(g.Severity),
			Firing: g.Firing, Resolved: g.Resolved, Notified: g.Notified, Seq: g.Seq, StartsAtMS: g.StartsAtMS,
			LastMS: g.LastMS, NextMS: g.NextMS, Devices: g.Devices})
	}
	writeJSON(w, http.StatusOK, out)
}

func return400(w http.ResponseWriter, msg string) { writeError(w, http.StatusBadRequest, msg) }

func status(sl silence.Silence, now time.Time) string {
	switch {
	case now.Before(sl.StartsAt):
		return "pending"
	case now.Before(sl.EndsAt):
		return "active"
	}
	return "expired"
}

func (s *Server) listSilences(w http.ResponseWriter, r *http.Request) {
	want := ""
	for k := range r.URL.Query() {
		if k != "status" {
			return400(w, fmt.Sprintf("unknown query parameter %q: use status", k))
			return
		}
	}
	if want = r.URL.Query().Get("status"); want != "" && want != "active" && want != "pending" && want != "expired" {
		return400(w, fmt.Sprintf("status %q: use active, pending or expired", want))
		return
	}
	stored, err := s.deps.Silences.List(r.Context())
	if err != nil {
		s.log.Warn("list silences", "err", err)
		writeError(w, http.StatusServiceUnavailable, "the silence bucket cannot be read: "+err.Error())
		return
	}
	now := s.now()
	out := struct {
		Silences []Silence `json:"silences"`
	}{Silences: []Silence{}}
	add := func(sl silence.Silence, source string) {
		if st := status(sl, now); want == "" || st == want {
			out.Silences = append(out.Silences, Silence{Silence: sl, Status: st, Source: source})
		}
	}
	for _, sl := range stored {
		add(sl, "api")
	}
	for _, sl := range s.deps.Backend.ConfigSilences(now) {
		add(sl, "config")
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSilence(w http.ResponseWriter, r *http.Request) {
	sl, err := s.deps.Silences.Get(r.Context(), r.PathValue("id"))
	if s.storeError(w, err, "silence", r.PathValue("id")) {
		return
	}
	writeJSON(w, http.StatusOK, Silence{Silence: sl, Status: status(sl, s.now()), Source: "api"})
}

// decodeBody reads a JSON body strictly (unknown fields are errors) within
// the size limit.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: send application/json", ct))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("extra data after the JSON value")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over %d bytes (evaluator.api.max_body_bytes)", tooBig.Limit))
			return false
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("the body is empty")
		}
		return400(w, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// silenceBody is what POST and PUT accept.
type silenceBody struct {
	ID                 string    `json:"id"`
	Matchers           []string  `json:"matchers"`
	StartsAt           time.Time `json:"starts_at"`
	EndsAt             time.Time `json:"ends_at"`
	Comment            string    `json:"comment"`
	CreatedBy          string    `json:"created_by"`
	ExpireWhenResolved bool      `json:"expire_when_resolved"`
}

func (b silenceBody) silence() silence.Silence {
	return silence.Silence{ID: b.ID, Matchers: b.Matchers, StartsAt: b.StartsAt, EndsAt: b.EndsAt, Comment: b.Comment,
		CreatedBy: b.CreatedBy, ExpireWhenResolved: b.ExpireWhenResolved}
}

func (s *Server) createSilence(w http.ResponseWriter, r *http.Request) {
	var b silenceBody
	if !s.decodeBody(w, r, &b) {
		return
	}
	sl, err := silencestore.Prepare(b.silence(), s.now())
	if err != nil {
		return400(w, err.Error())
		return
	}
	if err := s.deps.Silences.Create(r.Context(), sl); err != nil {
		if errors.Is(err, silencestore.ErrExists) {
			writeError(w, http.StatusConflict, fmt.Sprintf("silence %q exists already: PUT /api/v1/silences/%s to replace it", sl.ID, sl.ID))
			return
		}
		s.storeError(w, err, "silence", sl.ID)
		return
	}
	s.log.Info("silence created", "id", sl.ID, "matchers", sl.Matchers, "ends_at", sl.EndsAt, "created_by", sl.CreatedBy)
	w.Header().Set("Location", "/api/v1/silences/"+sl.ID)
	writeJSON(w, http.StatusCreated, Silence{Silence: sl, Status: status(sl, s.now()), Source: "api"})
}

func (s *Server) putSilence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := silencestore.CheckID(id); err != nil {
		return400(w, err.Error())
		return
	}
	var b silenceBody
	if !s.decodeBody(w, r, &b) {
		return
	}
	if b.ID != "" && b.ID != id {
		return400(w, fmt.Sprintf("the body's id %q differs from the path's %q: leave it out or make them equal", b.ID, id))
		return
	}
	b.ID = id
	sl, err := silencestore.Prepare(b.silence(), s.now())
	if err != nil {
		return400(w, err.Error())
		return
	}
	if err := s.deps.Silences.Put(r.Context(), sl); s.storeError(w, err, "silence", id) {
		return
	}
	s.log.Info("silence stored", "id", sl.ID, "matchers", sl.Matchers, "ends_at", sl.EndsAt, "created_by", sl.CreatedBy)
	writeJSON(w, http.StatusOK, Silence{Silence: sl, Status: status(sl, s.now()), Source: "api"})
}

func (s *Server) deleteSilence(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.storeError(w, s.deps.Silences.Delete(r.Context(), id), "silence", id) {
		return
	}
	s.log.Info("silence deleted", "id", id)
	w.WriteHeader(http.StatusNoContent)
}

// storeError answers a store error (true) or does nothing (false).
func (s *Server) storeError(w http.ResponseWriter, err error, what, id string) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, silencestore.ErrNotFound), errors.Is(err, inventorykv.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no %s %q", what, id))
	case errors.Is(err, silence.ErrInvalid), errors.Is(err, inventorykv.ErrInvalid):
		return400(w, err.Error())
	default:
		s.log.Warn("kv store", "what", what, "err", err)
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("the %s bucket is unavailable: %v", what, err))
	}
	return true
}

// Inventory is a device's dynamic inventory entry in API answers.
type Inventory struct {
	DeviceID string            `json:"device_id"`
	Labels   map[string]string `json:"labels"`
}

func (s *Server) getInventory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ls, err := s.deps.Inventory.Get(r.Context(), id)
	if s.storeError(w, err, "inventory entry for device", id) {
		return
	}
	writeJSON(w, http.StatusOK, Inventory{DeviceID: id, Labels: ls})
}

func (s *Server) putInventory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var ls map[string]string
	if !s.decodeBody(w, r, &ls) {
		return
	}
	if err := s.deps.Inventory.Put(r.Context(), id, ls); s.storeError(w, err, "inventory entry for device", id) {
		return
	}
	s.log.Info("inventory entry stored", "device_id", id, "labels", len(ls))
	writeJSON(w, http.StatusOK, Inventory{DeviceID: id, Labels: ls})
}

func (s *Server) deleteInventory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.storeError(w, s.deps.Inventory.Delete(r.Context(), id), "inventory entry for device", id) {
		return
	}
	s.log.Info("inventory entry deleted", "device_id", id)
	w.WriteHeader(http.StatusNoContent)
}
