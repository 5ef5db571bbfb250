package silencestore

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
)

// WindowConfig is a recurring maintenance window: the alerts of the devices
// its matchers select are silenced from Start to End (wall-clock times in
// TimeZone) on each of Weekdays.
type WindowConfig struct {
	// Name identifies the window; its silences are named
	// window-<name>-<start unix seconds>.
	Name string `yaml:"name"`
	// Matchers select devices by label, as in silences and routes.
	Matchers []string `yaml:"matchers"`
	// Weekdays the window starts on: mon, tue, wed, thu, fri, sat, sun
	// (empty: every day).
	Weekdays []string `yaml:"weekdays"`
	// Start and End are times of day, HH:MM. An End not after Start ends
	// the next day (22:00 to 02:00 spans midnight).
	Start string `yaml:"start"`
	End   string `yaml:"end"`
	// TimeZone is an IANA zone name, e.g. Asia/Shanghai (default UTC).
	TimeZone string `yaml:"time_zone"`
	// Comment is copied into the silences.
	Comment string `yaml:"comment"`
}

// Window is a compiled WindowConfig.
type Window struct {
	cfg        WindowConfig
	loc        *time.Location
	days       [7]bool // by time.Weekday
	start, end int     // minutes after midnight
}

var (
	windowNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	weekdays     = map[string]time.Weekday{
		"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
		"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	}
)

// ParseClock parses a time of day, HH:MM (00:00 to 24:00), into minutes
// after midnight.
func ParseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) != 2 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	switch {
	case err1 != nil || err2 != nil || h[0] == '+' || h[0] == '-' || m[0] == '+' || m[0] == '-':
		return 0, fmt.Errorf("%q is not HH:MM", s)
	case hh > 24 || mm > 59 || hh == 24 && mm != 0:
		return 0, fmt.Errorf("%q is not a time of day (00:00 to 24:00)", s)
	}
	return hh*60 + mm, nil
}

// CompileWindows validates windows; errors name the field under prefix.
func CompileWindows(cfgs []WindowConfig, prefix string) ([]Window, error) {
	out := make([]Window, 0, len(cfgs))
	names := map[string]bool{}
	for i, c := range cfgs {
		f := fmt.Sprintf("%s[%d]", prefix, i)
		w := Window{cfg: c}
		switch {
		case !windowNameRE.MatchString(c.Name):
			return nil, fmt.Errorf("%s.name is %q: use 1 to 64 letters, digits, _ and -, e.g. nightly-plant7", f, c.Name)
		case names[c.Name]:
			return nil, fmt.Errorf("%s.name %q is used twice: give each window its own name", f, c.Name)
		case len(c.Matchers) == 0:
			return nil, fmt.Errorf("%s.matchers is empty: select the devices, e.g. ['site=\"plant7\"']", f)
		}
		names[c.Name] = true
		if _, err := route.ParseMatchers(c.Matchers); err != nil {
			return nil, fmt.Errorf("%s.matchers%w", f, err)
		}
		for j, d := range c.Weekdays {
			wd, ok := weekdays[strings.ToLower(d)]
			if !ok {
				return nil, fmt.Errorf("%s.weekdays[%d] is %q: use mon, tue, wed, thu, fri, sat or sun", f, j, d)
			}
			w.days[wd] = true
		}
		if len(c.Weekdays) == 0 {
			w.days = [7]bool{true, true, true, true, true, true, true}
		}
		var err error
		if w.start, err = ParseClock(c.Start); err != nil {
			return nil, fmt.Errorf("%s.start %v: write HH:MM, e.g. 02:00", f, err)
		}
		if w.end, err = ParseClock(c.End); err != nil {
			return nil, fmt.Errorf("%s.end %v: write HH:MM, e.g. 04:00", f, err)
		}
		tz := c.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		if w.loc, err = time.LoadLocation(tz); err != nil {
			return nil, fmt.Errorf("%s.time_zone is %q: use an IANA zone name, e.g. Asia/Shanghai or UTC", f, c.TimeZone)
		}
		out = append(out, w)
	}
	return out, nil
}

// Occurrence returns the window's occurrence in force at now, else its next
// one: the first that ends after now. Times are wall-clock times in the
// window's zone, so a window keeps its local hours across DST changes.
func (w Window) Occurrence(now time.Time) (start, end time.Time) {
	local := now.In(w.loc)
	y, m, d := local.Date()
	// An occurrence that started yesterday may still run (end on the next
	// day); the next start is at most a week away.
	for off := -1; off <= 7; off++ {
		day := time.Date(y, m, d+off, 0, 0, 0, 0, w.loc)
		if !w.days[day.Weekday()] {
			continue
		}
		start = clockOn(day, w.start, w.loc)
		endDay := day
		if w.end <= w.start {
			endDay = time.Date(y, m, d+off+1, 0, 0, 0, 0, w.loc)
		}
		end = clockOn(endDay, w.end, w.loc)
		if end.After(now) && end.After(start) {
			return start, end
		}
	}
	return time.Time{}, time.Time{} // no weekday set: cannot happen once compiled
}

// clockOn returns the wall-clock time min minutes after midnight on day.
func clockOn(day time.Time, min int, loc *time.Location) time.Time {
	y, m, d := day.Date()
	return time.Date(y, m, d, min/60, min%60, 0, 0, loc)
}

// Silence returns the occurrence of the window that is in force at now or
// comes next, as a compiled silence.
func (w Window) Silence(now time.Time) silence.Silence {
	start, end := w.Occurrence(now)
	s := silence.Silence{
		ID:        "window-" + w.cfg.Name + "-" + strconv.FormatInt(start.Unix(), 10),
		Matchers:  w.cfg.Matchers,
		StartsAt:  start.UTC(),
		EndsAt:    end.UTC(),
		Comment:   w.cfg.Comment,
		CreatedBy: "config:evaluator.silences.windows",
	}
	_ = s.Compile() // validated by CompileWindows
	return s
}

// Expand returns one silence per window (its occurrence in force at now, or
// the next) and the time at which the result changes: the earliest end.
func Expand(ws []Window, now time.Time) (out []silence.Silence, validUntil time.Time) {
	for _, w := range ws {
		s := w.Silence(now)
		out = append(out, s)
		if validUntil.IsZero() || s.EndsAt.Before(validUntil) {
			validUntil = s.EndsAt
		}
	}
	return out, validUntil
}
