package silencestore_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silence"
	"github.com/fleetwatch/fleetwatch/services/evaluator/silencestore"
)

func open(t *testing.T) *silencestore.Store {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	st, err := silencestore.Open(t.Context(), js, silencestore.Config{Retention: time.Hour}, 1, true, log)
	if err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second replica opens the same bucket.
	if _, err := silencestore.Open(t.Context(), js, silencestore.Config{Retention: time.Hour}, 1, true, log); err != nil {
		t.Fatal(err)
	}
	return st
}

var now = time.Date(2025, 3, 3, 12, 0, 0, 0, time.UTC)

func mk(t *testing.T, id string, start, end time.Time) silence.Silence {
	t.Helper()
	s, err := silencestore.Prepare(silence.Silence{ID: id, Matchers: []string{`site="plant7"`}, StartsAt: start, EndsAt: end, CreatedBy: "ops"}, now)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ids(ss []silence.Silence) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestStoreCRUDWatchAndGC(t *testing.T) {
	st := open(t)
	ctx := t.Context()

	var (
		mu   sync.Mutex
		sets [][]string
	)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(wctx, func(ss []silence.Silence) {
			for _, s := range ss {
				if !s.Matches(func(string) string { return "plant7" }) {
					t.Errorf("watched silence %s is not compiled", s.ID)
				}
			}
			mu.Lock()
			sets = append(sets, ids(ss))
			mu.Unlock()
		})
	}()
	last := func() []string {
		mu.Lock()
		defer mu.Unlock()
		if len(sets) == 0 {
			return nil
		}
		return sets[len(sets)-1]
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return last() != nil }) // the empty initial set
	if got := last(); len(got) != 0 {
		t.Fatalf("initial set %v", got)
	}

	a := mk(t, "a", now, now.Add(time.Hour))
	if err := st.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, a); !errors.Is(err, silencestore.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	old := mk(t, "old", now.Add(-3*time.Hour), now.Add(-2*time.Hour)) // expired 2h ago, retention 1h
	recent := mk(t, "recent", now.Add(-time.Hour), now.Add(-30*time.Minute))
	for _, s := range []silence.Silence{old, recent} {
		if err := st.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(last(), []string{"a", "old", "recent"}) })

	got, err := st.Get(ctx, "a")
	if err != nil || got.CreatedBy != "ops" || !got.EndsAt.Equal(a.EndsAt) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := st.Get(ctx, "nope"); !errors.Is(err, silencestore.ErrNotFound) {
		t.Fatalf("Get(nope) = %v", err)
	}
	list, err := st.List(ctx)
	if err != nil || !slices.Equal(ids(list), []string{"a", "old", "recent"}) {
		t.Fatalf("List = %v, %v", ids(list), err)
	}

	n, err := st.GC(ctx, now)
	if err != nil || n != 1 {
		t.Fatalf("GC = %d, %v", n, err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(last(), []string{"a", "recent"}) })

	if err := st.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "a"); !errors.Is(err, silencestore.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return slices.Equal(last(), []string{"recent"}) })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPrepare(t *testing.T) {
	s, err := silencestore.Prepare(silence.Silence{Matchers: []string{"a=b"}, EndsAt: now.Add(time.Hour)}, now)
	if err != nil || len(s.ID) != 24 || !s.StartsAt.Equal(now) {
		t.Fatalf("Prepare = %+v, %v", s, err)
	}
	for _, tc := range []struct {
		s    silence.Silence
		want string
	}{
		{silence.Silence{ID: "a/b", Matchers: []string{"a=b"}, EndsAt: now.Add(time.Hour)},
			`invalid silence: id "a/b": use 1 to 128 letters, digits, _ and - (or leave it out to get one)`},
		{silence.Silence{Matchers: []string{"a=b"}, EndsAt: now.Add(-time.Hour)}, "invalid silence: ends_at 2025-03-03T11:00:00Z is not after starts_at 2025-03-03T12:00:00Z"},
		{silence.Silence{EndsAt: now.Add(time.Hour)}, `invalid silence: matchers is empty: a silence needs at least one matcher, e.g. site="sh-01"`},
	} {
		if _, err := silencestore.Prepare(tc.s, now); err == nil || err.Error() != tc.want {
			t.Errorf("Prepare(%+v) = %v, want %s", tc.s, err, tc.want)
		}
	}
}
