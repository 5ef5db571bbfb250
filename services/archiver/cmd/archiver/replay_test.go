package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/fleetwatch/fleetwatch/services/archiver/chtest"
	"github.com/nats-io/nats.go"
)

func TestReplayCommand(t *testing.T) {
	ch := chtest.Open(t)
	db := chtest.FreshDatabase(t, ch)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	if err := events.EnsureStreams(t.Context(), js, events.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, dev := range []string{"site-a-dev-1", "site-a-dev-2"} {
		e := presence(t, dev, events.KindConnected, "", now.Add(time.Duration(-i)*time.Minute), now.Add(time.Duration(-i)*time.Minute))
		b, _ := json.Marshal(e)
		m := nats.NewMsg(e.Subject(events.DefaultPartitions))
		m.Data = b
		m.Header.Set(events.HeaderMsgID, e.ID)
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	var out, errOut bytes.Buffer
	code := replay(t.Context(), []string{"--nats-url", srv.URL(), "--clickhouse", chtest.Addr(), "--database", db,
		"--from", "-1h", "--streams", "presence,deliveries"}, &out, &errOut, time.Now)
	if code != 0 {
		t.Fatalf("replay exit %d: %s", code, errOut.String())
	}
	body := out.String()[strings.Index(out.String(), "\n\n")+2:]
	want := "" +
		"stream      messages  rows  skipped\n" +
		"----------  --------  ----  -------\n" +
		"presence           2     2        0\n" +
		"deliveries         0     0        0\n" +
		"(2 rows)\n"
	if body != want {
		t.Errorf("replay output:\n%s\nwant:\n%s", body, want)
	}
	if n := chtest.Count(t, ch, "SELECT count() FROM "+db+".sessions FINAL"); n != 2 {
		t.Errorf("%d sessions after replay, want 2", n)
	}

	for _, args := range [][]string{
		{},
		{"--from", "-1h", "extra"},
		{"--from", "soon"},
		{"--from", "-1h", "--database", "x-y"},
	} {
		var o, e bytes.Buffer
		if code := replay(t.Context(), args, &o, &e, time.Now); code != 2 || e.Len() == 0 {
			t.Errorf("replay %q = %d, stderr %q; want 2 and a message", args, code, e.String())
		}
	}
}
