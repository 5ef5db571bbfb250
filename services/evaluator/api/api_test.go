package api

import (
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/fleetwatch/fleetwatch/services/evaluator/tracker"
)

func TestParseList(t *testing.T) {
	s := &Server{cfg: Config{}.WithDefaults()}
	lq, err := s.parseList(httptest.NewRequest("GET", `/api/v1/devices?state=offline,pending&state=online&match=site%3D%22a%22&match=x!~"y"&limit=7&after=d9`, nil), true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lq.statuses, []tracker.Status{"offline", "pending", "online"}) || len(lq.matchers) != 2 || lq.limit != 7 || lq.after != "d9" ||
		!lq.matchers.Matches(func(n string) string { return map[string]string{"site": "a"}[n] }) {
		t.Fatalf("%+v", lq)
	}
	if _, err := s.parseList(httptest.NewRequest("GET", "/api/v1/alerts?state=online", nil), false); err == nil ||
		err.Error() != `unknown query parameter "state": use match, limit or after` {
		t.Fatalf("alerts with state: %v", err)
	}
}

// FuzzParseList checks that any query string either parses into a valid
// query or is refused, without panicking.
func FuzzParseList(f *testing.F) {
	for _, q := range []string{"state=online", "match=site%3D%22a%22&limit=5", "limit=-1", "match=a%3D~%22(%22", "after=%00"} {
		f.Add(q)
	}
	s := &Server{cfg: Config{}.WithDefaults()}
	f.Fuzz(func(t *testing.T, q string) {
		req := httptest.NewRequest("GET", "/api/v1/devices", nil)
		req.URL.RawQuery = q
		lq, err := s.parseList(req, true)
		if err != nil {
			return
		}
		if lq.limit < 1 || lq.limit > s.cfg.MaxLimit {
			t.Fatalf("limit %d accepted", lq.limit)
		}
		for _, st := range lq.statuses {
			if !slices.Contains(tracker.Statuses, st) {
				t.Fatalf("status %q accepted", st)
			}
		}
	})
}

func TestPage(t *testing.T) {
	p := page{limit: 2, after: "b"}
	for _, id := range []string{"e", "a", "d", "b", "c", "f", "g", "h", "i", "j", "k"} {
		p.offer(id)
	}
	p.trim()
	if !slices.Equal(p.ids, []string{"c", "d", "e"}) {
		t.Fatalf("page %v", p.ids)
	}
}
