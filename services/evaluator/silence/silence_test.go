package silence

import (
	"errors"
	"testing"
	"time"
)

func TestCompileAndMatch(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	s := Silence{ID: "maint", Matchers: []string{`site="sh-01"`, `device_id=~"dev-1.*"`}, StartsAt: t0, EndsAt: t0.Add(time.Hour)}
	if err := s.Compile(); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"site": "sh-01", "device_id": "dev-17"}
	get := func(n string) string { return labels[n] }
	if !s.Matches(get) {
		t.Fatal("want match")
	}
	labels["device_id"] = "dev-27"
	if s.Matches(get) {
		t.Fatal("dev-27 must not match dev-1.*")
	}
	if !s.ActiveAt(t0) || s.ActiveAt(t0.Add(time.Hour)) || s.ActiveAt(t0.Add(-time.Second)) {
		t.Fatal("active range is [starts_at, ends_at)")
	}
}

func TestCompileRejects(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	for name, s := range map[string]Silence{
		"no id":       {Matchers: []string{`a="b"`}, StartsAt: t0, EndsAt: t0.Add(time.Hour)},
		"no matchers": {ID: "x", StartsAt: t0, EndsAt: t0.Add(time.Hour)},
		"bad matcher": {ID: "x", Matchers: []string{`a=~"("`}, StartsAt: t0, EndsAt: t0.Add(time.Hour)},
		"no times":    {ID: "x", Matchers: []string{`a="b"`}},
		"reversed":    {ID: "x", Matchers: []string{`a="b"`}, StartsAt: t0, EndsAt: t0},
	} {
		if err := s.Compile(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
