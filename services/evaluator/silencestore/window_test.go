package silencestore

import (
	"testing"
	"time"
)

func mustWindows(t *testing.T, cfgs ...WindowConfig) []Window {
	t.Helper()
	ws, err := CompileWindows(cfgs, "evaluator.silences.windows")
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

func TestWindowOccurrences(t *testing.T) {
	sh, _ := time.LoadLocation("Asia/Shanghai")
	ny, _ := time.LoadLocation("America/New_York")
	nightly := mustWindows(t, WindowConfig{Name: "nightly", Matchers: []string{`site="plant7"`}, Weekdays: []string{"mon", "WED"},
		Start: "22:00", End: "02:00", TimeZone: "Asia/Shanghai", Comment: "backups"})[0]
	tests := []struct {
		name       string
		w          Window
		now        time.Time
		start, end time.Time
	}{
		// 2025-03-03 is a Monday.
		{"before monday's", nightly, time.Date(2025, 3, 3, 12, 0, 0, 0, sh),
			time.Date(2025, 3, 3, 22, 0, 0, 0, sh), time.Date(2025, 3, 4, 2, 0, 0, 0, sh)},
		{"inside, after midnight", nightly, time.Date(2025, 3, 4, 1, 59, 0, 0, sh),
			time.Date(2025, 3, 3, 22, 0, 0, 0, sh), time.Date(2025, 3, 4, 2, 0, 0, 0, sh)},
		{"at the end: the next one", nightly, time.Date(2025, 3, 4, 2, 0, 0, 0, sh),
			time.Date(2025, 3, 5, 22, 0, 0, 0, sh), time.Date(2025, 3, 6, 2, 0, 0, 0, sh)},
		{"wednesday's ended: next monday", nightly, time.Date(2025, 3, 6, 3, 0, 0, 0, sh),
			time.Date(2025, 3, 10, 22, 0, 0, 0, sh), time.Date(2025, 3, 11, 2, 0, 0, 0, sh)},
		{"now in UTC", nightly, time.Date(2025, 3, 3, 14, 30, 0, 0, time.UTC), // 22:30 in Shanghai
			time.Date(2025, 3, 3, 22, 0, 0, 0, sh), time.Date(2025, 3, 4, 2, 0, 0, 0, sh)},
		// New York springs forward on 2025-03-09: the window keeps 01:00-04:00
		// local time, 2 hours long that night.
		{"dst", mustWindows(t, WindowConfig{Name: "dst", Matchers: []string{"a=b"}, Start: "01:00", End: "04:00", TimeZone: "America/New_York"})[0],
			time.Date(2025, 3, 9, 0, 30, 0, 0, ny), time.Date(2025, 3, 9, 1, 0, 0, 0, ny), time.Date(2025, 3, 9, 4, 0, 0, 0, ny)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, e := tc.w.Occurrence(tc.now)
			if !s.Equal(tc.start) || !e.Equal(tc.end) {
				t.Fatalf("Occurrence(%s) = %s .. %s, want %s .. %s", tc.now, s, e, tc.start, tc.end)
			}
		})
	}
	sl := nightly.Silence(time.Date(2025, 3, 3, 12, 0, 0, 0, sh))
	if sl.ID != "window-nightly-1741010400" || !sl.StartsAt.Equal(time.Date(2025, 3, 3, 14, 0, 0, 0, time.UTC)) ||
		sl.Comment != "backups" || !sl.Matches(func(n string) string { return map[string]string{"site": "plant7"}[n] }) {
		t.Fatalf("silence %+v", sl)
	}
	if d := tests[5].end.Sub(tests[5].start); d != 2*time.Hour {
		t.Fatalf("dst window lasts %s", d)
	}
}

func TestExpand(t *testing.T) {
	ws := mustWindows(t,
		WindowConfig{Name: "a", Matchers: []string{"a=1"}, Start: "01:00", End: "02:00"},
		WindowConfig{Name: "b", Matchers: []string{"b=1"}, Start: "00:30", End: "00:45"})
	now := time.Date(2025, 1, 1, 0, 40, 0, 0, time.UTC)
	out, until := Expand(ws, now)
	if len(out) != 2 || !until.Equal(time.Date(2025, 1, 1, 0, 45, 0, 0, time.UTC)) ||
		!out[0].StartsAt.Equal(time.Date(2025, 1, 1, 1, 0, 0, 0, time.UTC)) || !out[1].ActiveAt(now) {
		t.Fatalf("Expand = %+v until %s", out, until)
	}
}

func TestWindowErrors(t *testing.T) {
	ok := WindowConfig{Name: "w", Matchers: []string{"a=b"}, Start: "01:00", End: "02:00"}
	tests := []struct {
		edit func(*WindowConfig)
		want string
	}{
		{func(w *WindowConfig) { w.Name = "a b" }, `x[0].name is "a b": use 1 to 64 letters, digits, _ and -, e.g. nightly-plant7`},
		{func(w *WindowConfig) { w.Matchers = nil }, `x[0].matchers is empty: select the devices, e.g. ['site="plant7"']`},
		{func(w *WindowConfig) { w.Matchers = []string{"a"} }, `x[0].matchers[0] "a": invalid matcher: no operator: write name=value, name!=value, name=~regexp or name!~regexp`},
		{func(w *WindowConfig) { w.Weekdays = []string{"monday"} }, `x[0].weekdays[0] is "monday": use mon, tue, wed, thu, fri, sat or sun`},
		{func(w *WindowConfig) { w.Start = "1:00" }, `x[0].start "1:00" is not HH:MM: write HH:MM, e.g. 02:00`},
		{func(w *WindowConfig) { w.End = "24:30" }, `x[0].end "24:30" is not a time of day (00:00 to 24:00): write HH:MM, e.g. 04:00`},
		{func(w *WindowConfig) { w.TimeZone = "Mars/Olympus" }, `x[0].time_zone is "Mars/Olympus": use an IANA zone name, e.g. Asia/Shanghai or UTC`},
	}
	for _, tc := range tests {
		w := ok
		tc.edit(&w)
		_, err := CompileWindows([]WindowConfig{w}, "x")
		if err == nil || err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", err, tc.want)
		}
	}
	if _, err := CompileWindows([]WindowConfig{ok, ok}, "x"); err == nil || err.Error() != `x[1].name "w" is used twice: give each window its own name` {
		t.Errorf("duplicate: %v", err)
	}
}

func FuzzParseClock(f *testing.F) {
	for _, s := range []string{"00:00", "24:00", "23:59", "1:00", "+1:00", "aa:bb", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseClock(s)
		if err != nil {
			return
		}
		if m < 0 || m > 24*60 || len(s) != 5 {
			t.Fatalf("ParseClock(%q) = %d", s, m)
		}
	})
}
