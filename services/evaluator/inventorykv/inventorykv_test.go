package inventorykv_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/evaluator/inventorykv"
)

func TestKey(t *testing.T) {
	for id, want := range map[string]string{
		"plant7-gw1_0001": "plant7-gw1_0001",
		"a.b*c> d":        "a=2Eb=2Ac=3E=20d",
		"设":               "=E8=AE=BE",
		"=":               "=3D",
	} {
		k, err := inventorykv.Key(id)
		if err != nil || k != want {
			t.Errorf("Key(%q) = %q, %v, want %q", id, k, err, want)
		}
		back, err := inventorykv.DeviceID(k)
		if err != nil || back != id {
			t.Errorf("DeviceID(%q) = %q, %v", k, back, err)
		}
	}
	for _, bad := range []string{"", "=2", "=2e", "=41", "a.b", "=ZZ"} {
		if _, err := inventorykv.DeviceID(bad); !errors.Is(err, inventorykv.ErrInvalid) {
			t.Errorf("DeviceID(%q) = %v", bad, err)
		}
	}
	if _, err := inventorykv.Key(strings.Repeat(".", 400)); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("long id: %v", err)
	}
}

func FuzzKey(f *testing.F) {
	for _, s := range []string{"dev-1", "a.b", "=41", "设备", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := inventorykv.Key(s); err == nil {
			back, err := inventorykv.DeviceID(k)
			if err != nil || back != s {
				t.Fatalf("Key(%q) = %q, DeviceID = %q, %v", s, k, back, err)
			}
		}
		if id, err := inventorykv.DeviceID(s); err == nil {
			if k, err := inventorykv.Key(id); err != nil || k != s {
				t.Fatalf("DeviceID(%q) = %q, Key = %q, %v", s, id, k, err)
			}
		}
	})
}

func FuzzParseLabels(f *testing.F) {
	f.Add([]byte(`{"site":"plant7"}`))
	f.Add([]byte(`{"node":"x"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := inventorykv.ParseLabels(b)
		if err == nil && inventorykv.CheckLabels(m) != nil {
			t.Fatalf("ParseLabels(%q) accepted invalid labels %v", b, m)
		}
	})
}

func TestParseLabelsErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"node":"x"}`: `invalid inventory entry: label "node" is implicit (device_id, node and reason are set by the evaluator): pick another name`,
		`{"1a":"x"}`:   `invalid inventory entry: label "1a" is not a label name: use letters, digits and _, not starting with a digit`,
		`null`:         `invalid inventory entry: labels is missing: send a JSON object, e.g. {"site":"plant7"}`,
		`{"a":1}`:      "invalid inventory entry: want a JSON object of label names to string values: json: cannot unmarshal number into Go value of type string",
	} {
		if _, err := inventorykv.ParseLabels([]byte(in)); err == nil || err.Error() != want {
			t.Errorf("ParseLabels(%s) = %v\nwant %s", in, err, want)
		}
	}
}

func TestStoreWatch(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	st, err := inventorykv.Open(t.Context(), js, inventorykv.Config{}, 1, true, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := st.Put(ctx, "dev.1", map[string]string{"site": "plant7"}); err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got []inventorykv.Update
	)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(wctx, func(u inventorykv.Update) {
			mu.Lock()
			got = append(got, u)
			mu.Unlock()
		})
	}()
	updates := func() []inventorykv.Update {
		mu.Lock()
		defer mu.Unlock()
		return append([]inventorykv.Update(nil), got...)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(updates()) == 2 })
	if err := st.Put(ctx, "dev 2", map[string]string{"owner": "ops"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "dev.1"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "dev.1"); !errors.Is(err, inventorykv.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := st.Put(ctx, "dev 3", map[string]string{"reason": "x"}); !errors.Is(err, inventorykv.ErrInvalid) {
		t.Fatalf("put implicit label: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(updates()) == 4 })
	want := []inventorykv.Update{
		{DeviceID: "dev.1", Labels: map[string]string{"site": "plant7"}},
		{Loaded: true},
		{DeviceID: "dev 2", Labels: map[string]string{"owner": "ops"}},
		{DeviceID: "dev.1"},
	}
	if u := updates(); !reflect.DeepEqual(u, want) {
		t.Fatalf("updates %+v\nwant %+v", u, want)
	}
	if m, err := st.Get(ctx, "dev 2"); err != nil || m["owner"] != "ops" {
		t.Fatalf("Get = %v, %v", m, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
