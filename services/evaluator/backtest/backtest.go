// Package backtest replays recorded presence events through one or two
// evaluator configs (a candidate and, optionally, a baseline) with a
// simulated clock, and reports how many notifications each receiver would
// have received, the noisiest devices, and the difference between the two:
// the tool to tune grace, grouping and flap settings on real history.
//
// The clock is event time: before each event, every tick that was due by
// its broker time is applied, at the tick boundaries (multiples of the
// config's tick) where the tracker has a timer due, so idle stretches cost
// nothing. After the last event, ticks run up to Options.EndMS.
package backtest

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

// Sim replays events through one tracker.
type Sim struct {
	name   string
	tr     *tracker.Tracker
	tickMS int64
	now    int64 // the watermark: newest broker time applied
	rep    Report
	last   flushKey
	noisy  map[string]int
	// silences gives the silences in force at a time and when that set
	// changes; silencesUntil is when it must be asked again (0: at once).
	silences      func(now time.Time) ([]silence.Silence, time.Time)
	silencesUntil int64
	silencesSet   bool
}

// flushKey identifies one flush of a group: its notifications to each
// receiver are consecutive decisions with the same key.
type flushKey struct {
	fp      string
	start   int64
	created int64
	status  events.AlertStatus
}

// NewSim returns a simulation of tr ticking every tick.
func NewSim(name string, tr *tracker.Tracker, tick time.Duration) *Sim {
	return &Sim{name: name, tr: tr, tickMS: max(tick.Milliseconds(), 1), noisy: map[string]int{},
		rep: Report{Config: name, Receivers: map[string]*ReceiverCount{}}}
}

// SetSilences makes the simulation apply the silences fn returns (e.g. the
// config's maintenance windows, silencestore.Expand), in simulated time:
// at the first event, and again at each time fn said its set changes.
func (s *Sim) SetSilences(fn func(now time.Time) (set []silence.Silence, until time.Time)) {
	s.silences = fn
}

// refreshSilences applies the silences in force at ms, if they changed.
func (s *Sim) refreshSilences(ms int64) {
	if s.silences == nil || (s.silencesSet && (s.silencesUntil == 0 || ms < s.silencesUntil)) {
		return
	}
	now := time.UnixMilli(ms)
	set, until := s.silences(now)
	s.silencesSet, s.silencesUntil = true, 0
	if !until.IsZero() {
		s.silencesUntil = until.UnixMilli()
	}
	s.record(s.tr.Apply(tracker.Silences{Now: now, Active: set}))
}

// advance applies the ticks due by to.
func (s *Sim) advance(to int64) {
	for {
		due, ok := s.tr.NextDue()
		if !ok {
			return
		}
		at := (due + s.tickMS - 1) / s.tickMS * s.tickMS
		if due <= 0 {
			at = due
		}
		if at > to {
			return
		}
		s.refreshSilences(at)
		s.rep.Ticks++
		s.record(s.tr.Apply(tracker.Tick{Now: time.UnixMilli(at)}))
	}
}

// Apply applies one event after the ticks due by its broker time.
func (s *Sim) Apply(e *events.PresenceEvent) {
	if e.BrokerTSMS > s.now {
		s.advance(e.BrokerTSMS)
		s.now = e.BrokerTSMS
	}
	if s.rep.FirstMS == 0 || e.BrokerTSMS < s.rep.FirstMS {
		s.rep.FirstMS = e.BrokerTSMS
	}
	s.rep.LastMS = max(s.rep.LastMS, e.BrokerTSMS)
	s.rep.Events++
	s.refreshSilences(s.now)
	s.record(s.tr.Apply(tracker.Event{PresenceEvent: e}))
}

// Finish applies the ticks due by endMS and returns the report.
func (s *Sim) Finish(endMS int64, top int) *Report {
	if endMS > s.now {
		s.advance(endMS)
	}
	st := s.tr.Stats()
	s.rep.Outages, s.rep.Blips, s.rep.Fired, s.rep.Resolved = st.Outages, st.Blips, st.Fired, st.Resolved
	s.rep.Stale, s.rep.Duplicates, s.rep.Invalid = st.Stale, st.Duplicates, st.Invalid
	s.rep.Flapping, s.rep.MassOutages, s.rep.Folded = st.Flapping, st.Correlated, st.Folded
	s.rep.Silenced, s.rep.Inhibited = st.Silenced, st.Inhibited
	s.rep.Devices = s.tr.Len()
	s.rep.AlertedDevices = len(s.noisy)
	s.rep.Noisy = topN(s.noisy, top)
	s.rep.alerted = s.noisy
	return &s.rep
}

func (s *Sim) record(ds []tracker.Decision) {
	for i := range ds {
		a := &ds[i].Alert
		rc := s.rep.Receivers[a.Receiver]
		if rc == nil {
			rc = &ReceiverCount{}
			s.rep.Receivers[a.Receiver] = rc
		}
		switch {
		case a.Silenced || a.Inhibited:
			rc.Muted++
		case a.Status == events.StatusFiring:
			rc.Firing++
		default:
			rc.Resolved++
		}
		s.rep.Notifications++
		k := flushKey{fp: a.Fingerprint, start: a.StartsAtMS, created: a.CreatedAtMS, status: a.Status}
		if k == s.last {
			continue // the same flush, another receiver
		}
		s.last = k
		if a.Status != events.StatusFiring {
			continue
		}
		// The devices of a notification list the new ones first.
		for _, d := range a.Devices[:min(ds[i].New, len(a.Devices))] {
			s.noisy[d.DeviceID]++
		}
	}
}

// ReceiverCount counts one receiver's notifications.
type ReceiverCount struct {
	Firing   int `json:"firing"`
	Resolved int `json:"resolved"`
	// Muted notifications are recorded but not delivered (silenced or
	// inhibited).
	Muted int `json:"muted"`
}

// Total is every delivered notification.
func (c ReceiverCount) Total() int { return c.Firing + c.Resolved }

// DeviceCount is a device and how many times it was announced as newly
// offline.
type DeviceCount struct {
	DeviceID string `json:"device_id"`
	Alerts   int    `json:"alerts"`
}

// Report is what one config would have done.
type Report struct {
	Config string `json:"config"`
	// Events replayed; FirstMS and LastMS bound their broker times.
	Events          int   `json:"events"`
	FirstMS, LastMS int64 `json:"-"`
	Ticks           int   `json:"ticks"`
	// Notifications is every decision, all receivers.
	Notifications int                       `json:"notifications"`
	Receivers     map[string]*ReceiverCount `json:"receivers"`
	// Noisy are the devices announced most often as newly offline.
	Noisy          []DeviceCount `json:"noisy"`
	AlertedDevices int           `json:"alerted_devices"`
	Devices        int           `json:"devices"`
	// Tracker counters.
	Outages    uint64 `json:"outages"`
	Blips      uint64 `json:"blips"`
	Fired      uint64 `json:"fired"`
	Resolved   uint64 `json:"resolved"`
	Stale      uint64 `json:"stale"`
	Duplicates uint64 `json:"duplicates"`
	Invalid    uint64 `json:"invalid"`
	// Flapping counts flapping episodes (one device_flapping alert each,
	// the device's own alerts held); MassOutages the mass outages detected
	// (group_outage alerts) and Folded the device alerts folded into them.
	Flapping    uint64 `json:"flapping"`
	MassOutages uint64 `json:"mass_outages"`
	Folded      uint64 `json:"folded"`
	// Silenced and Inhibited count notifications recorded but not
	// delivered.
	Silenced  uint64 `json:"silenced"`
	Inhibited uint64 `json:"inhibited"`

	alerted map[string]int
}

func topN(m map[string]int, n int) []DeviceCount {
	out := make([]DeviceCount, 0, len(m))
	for id, c := range m {
		out = append(out, DeviceCount{id, c})
	}
	slices.SortFunc(out, func(a, b DeviceCount) int {
		if c := cmp.Compare(b.Alerts, a.Alerts); c != 0 {
			return c
		}
		return cmp.Compare(a.DeviceID, b.DeviceID)
	})
	return out[:min(n, len(out))]
}

// Diff compares a candidate with a baseline.
type Diff struct {
	// OnlyCandidate and OnlyBaseline count the devices alerted by one config
	// and not the other.
	OnlyCandidate int `json:"only_candidate"`
	OnlyBaseline  int `json:"only_baseline"`
}

// Compare returns the devices alerted by one report and not the other.
func Compare(cand, base *Report) Diff {
	var d Diff
	for id := range cand.alerted {
		if _, ok := base.alerted[id]; !ok {
			d.OnlyCandidate++
		}
	}
	for id := range base.alerted {
		if _, ok := cand.alerted[id]; !ok {
			d.OnlyBaseline++
		}
	}
	return d
}

// Input counts what was read.
type Input struct {
	Lines int `json:"lines"`
	// Skipped lines did not parse or were not valid presence events; the
	// first error is kept with its line number.
	Skipped    int    `json:"skipped"`
	FirstError string `json:"first_error,omitempty"`
}

// check is the validation the backtest applies: the fields the tracker
// relies on (not the content-derived id, which costs a hash per event).
func check(e *events.PresenceEvent) error {
	switch {
	case e.V != events.Version:
		return fmt.Errorf("v is %d, want %d", e.V, events.Version)
	case e.DeviceID == "":
		return errors.New("device_id is empty")
	case e.Kind != events.KindConnected && e.Kind != events.KindDisconnected:
		return fmt.Errorf("kind %q is neither connected nor disconnected", e.Kind)
	case e.Node == "":
		return errors.New("node is empty")
	case e.BrokerTSMS <= 0:
		return fmt.Errorf("broker_ts_ms %d is not positive", e.BrokerTSMS)
	}
	return nil
}

// ReadJSONL decodes presence events, one JSON object per line (empty lines
// are ignored), and calls fn with batches of them, in the order of the
// lines, on another goroutine than the decoding ones: the lines are read
// in chunks that decoders goroutines decode in parallel while the
// simulations apply the previous ones. The events of a batch are valid
// only during fn, their strings too (they point into the chunk's bytes,
// read into again after fn): copy what must outlive it.
func ReadJSONL(r io.Reader, fn func([]events.PresenceEvent)) (Input, error) {
	free := make(chan *chunk, numChunks)
	for range numChunks {
		free <- &chunk{done: make(chan struct{}, 1)}
	}
	work := make(chan *chunk, numChunks)
	order := make(chan *chunk, numChunks)
	var wg sync.WaitGroup
	for range decoders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The events of a chunk live as long as its bytes (until fn
			// returns): their strings can point into them.
			dec := &events.PresenceDecoder{IgnoreID: true, Borrow: true} // the tracker does not read the id
			for c := range work {
				c.decode(dec)
				c.done <- struct{}{}
			}
		}()
	}
	applied := make(chan Input)
	go func() {
		var in Input
		for c := range order {
			<-c.done
			in.Skipped += c.skipped
			if in.FirstError == "" {
				in.FirstError = c.firstError
			}
			if len(c.evs) > 0 {
				fn(c.evs)
			}
			free <- c
		}
		applied <- in
	}()
	lines, err := readChunks(r, free, work, order)
	close(work)
	close(order)
	in := <-applied
	wg.Wait()
	in.Lines = lines
	if err != nil {
		return in, fmt.Errorf("read line %d: %w", lines+1, err)
	}
	return in, nil
}

// decoders is the number of goroutines decoding JSON lines, numChunks the
// chunks of lines in flight (read, decoding, decoded or being applied).
const (
	decoders  = 2
	numChunks = 3 * decoders
)

// chunkBytes is the size of a chunk's buffer (a few thousand lines);
// maxLine bounds a line with its newline: a longer one is an error
// (bufio.ErrTooLong, as bufio.Scanner reports it).
const (
	chunkBytes = 1 << 20
	maxLine    = 8 << 20
)

// chunk is the consecutive lines read into one buffer, and their events.
type chunk struct {
	data  []byte // bytes read, the lines among them
	lines []span // the lines, newlines (and a CR before one) excluded
	rest  int    // where the bytes after the last line start in data
	first int    // the number of the first line (from 1)
	evs   []events.PresenceEvent
	// skipped counts the lines that did not decode or check; firstError
	// is the first one's error, with its line number.
	skipped    int
	firstError string
	done       chan struct{} // signalled when decoded
}

// span is where a line is in a chunk's data.
type span struct{ start, end int }

// readChunks reads r into the buffers of chunks, splits them into lines
// (as bufio.ScanLines does: a CR before a newline is dropped, a last line
// without one counts), hands each chunk to a decoder (work) and, in order,
// to the simulations (order). The bytes are read where they are decoded:
// only the start of the line a buffer ends in is copied, into the next
// one. It returns the number of lines read.
func readChunks(r io.Reader, free <-chan *chunk, work, order chan<- *chunk) (int, error) {
	lines := 0
	var carry []byte // the start of the line the last buffer ended in
	for {
		c := <-free
		if cap(c.data) < chunkBytes {
			c.data = make([]byte, 0, chunkBytes)
		}
		c.data = append(c.data[:0], carry...)
		c.lines, c.first = c.lines[:0], lines+1
		err := c.split(r)
		lines += len(c.lines)
		carry = append(carry[:0], c.data[c.rest:]...)
		work <- c
		order <- c
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return lines, err
		}
	}
}

// split reads from r into c.data until it is full, splitting what it holds
// into lines. At the end of r (or on a read error) the rest is the last
// line, and it returns io.EOF (or the error); on a line longer than
// maxLine, bufio.ErrTooLong.
func (c *chunk) split(r io.Reader) error {
	start, scanned, empty := 0, 0, 0
	var err error
	for {
		if i := bytes.IndexByte(c.data[scanned:], '\n'); i >= 0 {
			end := scanned + i
			c.line(start, end)
			start, scanned = end+1, end+1
			continue
		}
		scanned = len(c.data)
		if err != nil {
			// What the last read brought is split: the rest is the last
			// line.
			if start < len(c.data) {
				c.line(start, len(c.data))
				start = len(c.data)
			}
			c.rest = start
			return err
		}
		limit := min(cap(c.data), maxLine)
		if len(c.data) == limit {
			c.rest = start
			if start > 0 {
				return nil // full: the line cut goes on in the next chunk
			}
			if limit == maxLine {
				return bufio.ErrTooLong
			}
			c.data = slices.Grow(c.data, min(2*cap(c.data), maxLine)-len(c.data))
			limit = min(cap(c.data), maxLine)
		}
		var n int
		n, err = r.Read(c.data[len(c.data):limit])
		c.data = c.data[:len(c.data)+n]
		switch {
		case n > 0 || err != nil:
			empty = 0
		case empty == 99:
			err = io.ErrNoProgress // as bufio.Scanner gives up
		default:
			empty++
		}
	}
}

// line adds the line data[start:end], without a CR that ends it.
func (c *chunk) line(start, end int) {
	if end > start && c.data[end-1] == '\r' {
		end--
	}
	c.lines = append(c.lines, span{start, end})
}

// decode decodes the chunk's lines into its events.
func (c *chunk) decode(dec *events.PresenceDecoder) {
	c.evs, c.skipped, c.firstError = c.evs[:0], 0, ""
	for i, l := range c.lines {
		line := c.data[l.start:l.end]
		if len(line) == 0 {
			continue
		}
		c.evs = append(c.evs, events.PresenceEvent{})
		e := &c.evs[len(c.evs)-1]
		err := dec.Decode(line, e)
		if err != nil {
			err = fmt.Errorf("invalid presence event JSON: %w", err)
		} else {
			err = check(e)
		}
		if err != nil {
			c.evs = c.evs[:len(c.evs)-1]
			c.skipped++
			if c.firstError == "" {
				c.firstError = fmt.Sprintf("line %d: %v", c.first+i, err)
			}
		}
	}
}

// Result is a backtest's outcome.
type Result struct {
	Input     Input   `json:"input"`
	Candidate *Report `json:"candidate"`
	Baseline  *Report `json:"baseline,omitempty"`
	Diff      *Diff   `json:"diff,omitempty"`
	// Seconds is the wall time of the replay; EventsPerSecond its rate.
	Seconds         float64 `json:"seconds"`
	EventsPerSecond float64 `json:"events_per_second"`
}

// Options tune a run.
type Options struct {
	// EndMS is the simulated time the clock reaches after the last event
	// (0: the last event's broker time).
	EndMS int64
	// Top is how many noisy devices are listed (default 10).
	Top int
}

// Run replays what feed produces (it calls its argument with batches of
// events) through the candidate and, when not nil, the baseline.
func Run(cand, base *Sim, opts Options, feed func(apply func([]events.PresenceEvent)) (Input, error)) (*Result, error) {
	if opts.Top == 0 {
		opts.Top = 10
	}
	started := time.Now()
	in, err := feed(func(es []events.PresenceEvent) {
		for i := range es {
			cand.Apply(&es[i])
		}
		if base != nil {
			for i := range es {
				base.Apply(&es[i])
			}
		}
	})
	if err != nil {
		return nil, err
	}
	end := max(opts.EndMS, cand.rep.LastMS)
	res := &Result{Input: in, Candidate: cand.Finish(end, opts.Top)}
	if base != nil {
		res.Baseline = base.Finish(end, opts.Top)
		d := Compare(res.Candidate, res.Baseline)
		res.Diff = &d
	}
	res.Seconds = time.Since(started).Seconds()
	if res.Seconds > 0 {
		res.EventsPerSecond = float64(res.Candidate.Events) / res.Seconds
	}
	return res, nil
}

// Print writes the result as text.
func (r *Result) Print(w io.Writer) {
	c, b := r.Candidate, r.Baseline
	fmt.Fprintf(w, "replayed %d events", c.Events)
	if c.Events > 0 {
		fmt.Fprintf(w, " (broker time %s .. %s)", time.UnixMilli(c.FirstMS).UTC().Format(time.RFC3339), time.UnixMilli(c.LastMS).UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, " in %.2fs, %.0f events/s; %d lines, %d skipped\n", r.Seconds, r.EventsPerSecond, r.Input.Lines, r.Input.Skipped)
	if r.Input.FirstError != "" {
		fmt.Fprintf(w, "first skipped: %s\n", r.Input.FirstError)
	}
	fmt.Fprintf(w, "\nnotifications per receiver (delivered firing + resolved; muted = silenced/inhibited, recorded only)\n")
	names := slices.Sorted(maps.Keys(c.Receivers))
	if b != nil {
		for n := range b.Receivers {
			if _, ok := c.Receivers[n]; !ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		fmt.Fprintf(w, "  %-24s %10s %10s %10s   %s\n", "receiver", "candidate", "baseline", "diff", "candidate firing/resolved/muted")
	} else {
		fmt.Fprintf(w, "  %-24s %10s   %s\n", "receiver", "candidate", "firing/resolved/muted")
	}
	get := func(r *Report, n string) ReceiverCount {
		if r == nil || r.Receivers[n] == nil {
			return ReceiverCount{}
		}
		return *r.Receivers[n]
	}
	var tc, tb int
	for _, n := range names {
		cc, bc := get(c, n), get(b, n)
		tc, tb = tc+cc.Total(), tb+bc.Total()
		if b != nil {
			fmt.Fprintf(w, "  %-24s %10d %10d %+10d   %d/%d/%d\n", n, cc.Total(), bc.Total(), cc.Total()-bc.Total(), cc.Firing, cc.Resolved, cc.Muted)
		} else {
			fmt.Fprintf(w, "  %-24s %10d   %d/%d/%d\n", n, cc.Total(), cc.Firing, cc.Resolved, cc.Muted)
		}
	}
	if b != nil {
		fmt.Fprintf(w, "  %-24s %10d %10d %+10d\n", "total", tc, tb, tc-tb)
	} else {
		fmt.Fprintf(w, "  %-24s %10d\n", "total", tc)
	}
	line := func(name string, cv, bv uint64) {
		if b != nil {
			fmt.Fprintf(w, "  %-24s %10d %10d %+10d\n", name, cv, bv, int64(cv)-int64(bv))
		} else {
			fmt.Fprintf(w, "  %-24s %10d\n", name, cv)
		}
	}
	fmt.Fprintf(w, "\noutages\n")
	bb := b
	if bb == nil {
		bb = &Report{}
	}
	line("outages", c.Outages, bb.Outages)
	line("blips (back within grace)", c.Blips, bb.Blips)
	line("alerted", c.Fired, bb.Fired)
	line("devices alerted", uint64(c.AlertedDevices), uint64(bb.AlertedDevices))
	line("flapping episodes", c.Flapping, bb.Flapping)
	line("mass outages", c.MassOutages, bb.MassOutages)
	line("alerts folded into them", c.Folded, bb.Folded)
	line("silenced notifications", c.Silenced, bb.Silenced)
	line("inhibited notifications", c.Inhibited, bb.Inhibited)
	if r.Diff != nil {
		fmt.Fprintf(w, "  devices alerted only by the candidate: %d, only by the baseline: %d\n", r.Diff.OnlyCandidate, r.Diff.OnlyBaseline)
	}
	fmt.Fprintf(w, "\ntop noisy devices (times announced newly offline)\n")
	for _, d := range c.Noisy {
		if b != nil {
			fmt.Fprintf(w, "  %-40s %6d  (baseline %d)\n", d.DeviceID, d.Alerts, b.alerted[d.DeviceID])
		} else {
			fmt.Fprintf(w, "  %-40s %6d\n", d.DeviceID, d.Alerts)
		}
	}
}
