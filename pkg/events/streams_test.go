package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var streamSubjects = map[string]string{
	events.StreamPresence:   "presence.v1.>",
	events.StreamAlerts:     "alerts.v1.>",
	events.StreamDeliveries: "deliveries.v1.>",
	events.StreamDeadLetter: "deadletter.v1.>",
	events.StreamNodes:      "nodes.v1.>",
}

func TestTopologyValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*events.Topology)
		want   string
	}{
		{"no replicas", func(tp *events.Topology) { tp.Replicas = 0 }, "topology.replicas is 0: use 1 (single server) to 5 (usually 3 in a cluster)"},
		{"too many replicas", func(tp *events.Topology) { tp.Replicas = 6 }, "topology.replicas is 6: use 1 (single server) to 5 (usually 3 in a cluster)"},
		{"negative duplicate window", func(tp *events.Topology) { tp.DuplicateWindow = -time.Second }, "topology.duplicate_window is negative: use a duration such as 10m"},
		{"negative presence age", func(tp *events.Topology) { tp.PresenceMaxAge = -time.Hour }, "topology.presence_max_age is negative: use a duration such as 168h, or 0 to keep events until max_bytes"},
		{"negative alerts age", func(tp *events.Topology) { tp.AlertsMaxAge = -time.Hour }, "topology.alerts_max_age is negative: use a duration such as 168h, or 0 to keep events until max_bytes"},
		{"negative deliveries age", func(tp *events.Topology) { tp.DeliveriesMaxAge = -time.Hour }, "topology.deliveries_max_age is negative: use a duration such as 168h, or 0 to keep events until max_bytes"},
		{"negative dead letter age", func(tp *events.Topology) { tp.DeadLetterMaxAge = -time.Hour }, "topology.deadletter_max_age is negative: use a duration such as 168h, or 0 to keep events until max_bytes"},
		{"max bytes below -1", func(tp *events.Topology) { tp.MaxBytes = -2 }, "topology.max_bytes is -2: use a byte count such as 1073741824 (1 GiB), or -1 for no limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := events.DefaultTopology()
			tt.modify(&tp)
			if err := tp.Validate(); err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	for _, ok := range []func(*events.Topology){
		func(*events.Topology) {},
		func(tp *events.Topology) { tp.Replicas = 3 },
		func(tp *events.Topology) { tp.Replicas = 5 },
		func(tp *events.Topology) { tp.MaxBytes, tp.DuplicateWindow, tp.PresenceMaxAge = -1, 0, 0 },
	} {
		tp := events.DefaultTopology()
		ok(&tp)
		if err := tp.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", tp, err)
		}
	}
}

func TestStreamConfigs(t *testing.T) {
	tp := events.DefaultTopology()
	tp.PresenceMaxAge = 5 * time.Minute // below the duplicate window
	cfgs := tp.StreamConfigs()
	var names []string
	for _, c := range cfgs {
		names = append(names, c.Name)
		if want := []string{streamSubjects[c.Name]}; !slices.Equal(c.Subjects, want) {
			t.Errorf("%s subjects %v, want %v", c.Name, c.Subjects, want)
		}
		if c.Storage != jetstream.FileStorage || c.Replicas != 1 || c.MaxBytes != 1<<30 ||
			c.Retention != jetstream.LimitsPolicy || c.Discard != jetstream.DiscardOld || c.Description == "" {
			t.Errorf("%s: %+v", c.Name, c)
		}
	}
	if want := []string{"PRESENCE", "ALERTS", "DELIVERIES", "DEADLETTER", "NODES"}; !slices.Equal(names, want) {
		t.Fatalf("streams %v, want %v", names, want)
	}
	if c := cfgs[0]; c.MaxAge != 5*time.Minute || c.Duplicates != 5*time.Minute {
		t.Errorf("PRESENCE max age %v duplicates %v: the duplicate window must be capped at the max age", c.MaxAge, c.Duplicates)
	}
	if c := cfgs[1]; c.MaxAge != 30*24*time.Hour || c.Duplicates != 10*time.Minute {
		t.Errorf("ALERTS max age %v duplicates %v", c.MaxAge, c.Duplicates)
	}
	tp.MemoryStorage = true
	for _, c := range tp.StreamConfigs() {
		if c.Storage != jetstream.MemoryStorage {
			t.Errorf("%s storage %v with MemoryStorage", c.Name, c.Storage)
		}
	}
}

func TestEnsureStreams(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	tp := events.DefaultTopology()

	for i := range 2 {
		if err := events.EnsureStreams(ctx, js, tp); err != nil {
			t.Fatalf("EnsureStreams call %d: %v", i+1, err)
		}
	}
	var names []string
	for name := range js.StreamNames(ctx).Name() {
		names = append(names, name)
	}
	slices.Sort(names)
	if want := []string{"ALERTS", "DEADLETTER", "DELIVERIES", "NODES", "PRESENCE"}; !slices.Equal(names, want) {
		t.Fatalf("streams %v, want %v", names, want)
	}
	for name, subject := range streamSubjects {
		cfg := streamConfig(t, js, name)
		if !slices.Equal(cfg.Subjects, []string{subject}) {
			t.Errorf("%s subjects %v, want [%s]", name, cfg.Subjects, subject)
		}
		if cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 || cfg.MaxBytes != tp.MaxBytes || cfg.Duplicates != tp.DuplicateWindow {
			t.Errorf("%s storage %v replicas %d max bytes %d duplicates %v", name, cfg.Storage, cfg.Replicas, cfg.MaxBytes, cfg.Duplicates)
		}
	}
	if got := streamConfig(t, js, events.StreamPresence).MaxAge; got != 7*24*time.Hour {
		t.Fatalf("PRESENCE max age %v, want 168h", got)
	}

	// A changed topology updates the streams in place, keeping their data.
	pub(t, js, events.PresenceSubject("dev-42", events.DefaultPartitions), "m1", []byte("{}"))
	tp.PresenceMaxAge = time.Hour
	tp.DuplicateWindow = 2 * time.Hour
	tp.MaxBytes = 1 << 30
	if err := events.EnsureStreams(ctx, js, tp); err != nil {
		t.Fatalf("EnsureStreams with a changed topology: %v", err)
	}
	presence := streamConfig(t, js, events.StreamPresence)
	if presence.MaxAge != time.Hour || presence.Duplicates != time.Hour || presence.MaxBytes != 1<<30 {
		t.Fatalf("PRESENCE after update: max age %v duplicates %v max bytes %d; want 1h 1h 1GiB", presence.MaxAge, presence.Duplicates, presence.MaxBytes)
	}
	if got := streamConfig(t, js, events.StreamAlerts).Duplicates; got != 2*time.Hour {
		t.Fatalf("ALERTS duplicates %v after update, want 2h", got)
	}
	if n := streamMsgs(t, js, events.StreamPresence); n != 1 {
		t.Fatalf("PRESENCE holds %d messages after the update, want 1", n)
	}
}

func TestEnsureStreamsErrors(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)

	bad := events.DefaultTopology()
	bad.Replicas = 0
	if err := events.EnsureStreams(t.Context(), js, bad); err == nil || err.Error() != "topology.replicas is 0: use 1 (single server) to 5 (usually 3 in a cluster)" {
		t.Fatalf("invalid topology: error %v", err)
	}

	// A single server cannot hold three replicas: the error names the stream.
	r3 := events.DefaultTopology()
	r3.Replicas = 3
	err := events.EnsureStreams(t.Context(), js, r3)
	var apiErr *jetstream.APIError
	if err == nil || !errors.As(err, &apiErr) {
		t.Fatalf("replicas 3 on one server: error %v, want a JetStream API error", err)
	}
	if want := "create or update stream PRESENCE: "; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

// TestEnsureStreamsMemoryDefaultTopology guards natstest's resource limits:
// the default topology reserves 4 x 1 GiB up front; memory-storage tests must not depend on the machine.
func TestEnsureStreamsMemoryDefaultTopology(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	tp := events.DefaultTopology()
	tp.MemoryStorage = true
	if err := events.EnsureStreams(t.Context(), js, tp); err != nil {
		t.Fatal(err)
	}
}

func TestPresenceDeduplication(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	tp := events.DefaultTopology()
	tp.MemoryStorage = true
	if err := events.EnsureStreams(ctx, js, tp); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"dev-42", "plant 7/line.3*>设备 %"} {
		e, err := events.NewPresenceEvent(events.PresenceEvent{
			DeviceID: id, Kind: events.KindConnected, Node: "emqx@10.0.0.11",
			BrokerTSMS: 1718000000123, ConnectedAtMS: 1718000000123, Source: "emqx_sys_v5",
		})
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		subject := e.Subject(events.DefaultPartitions)
		first := pub(t, js, subject, e.ID, data)
		second := pub(t, js, subject, e.ID, data)
		if first.Duplicate || !second.Duplicate || first.Sequence != second.Sequence || first.Stream != events.StreamPresence {
			t.Fatalf("%q: acks %+v then %+v; want one stored message, then a duplicate", id, first, second)
		}

		// "Last message for device X" is one lookup on its subject.
		stream, err := js.Stream(ctx, events.StreamPresence)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatalf("last message for %q: %v", id, err)
		}
		var got events.PresenceEvent
		if err := json.Unmarshal(raw.Data, &got); err != nil {
			t.Fatal(err)
		}
		if got != e {
			t.Fatalf("last message for %q is %+v, want %+v", id, got, e)
		}
	}
	if n := streamMsgs(t, js, events.StreamPresence); n != 2 {
		t.Fatalf("PRESENCE holds %d messages, want 2 (one per device)", n)
	}
}

func TestDeadLetterMsg(t *testing.T) {
	d := events.DeadLetter{
		Stage:   "ingest",
		Source:  "emqx_sys_v5",
		Topic:   "$SYS/brokers/emqx@10.0.0.11/clients/dev-42/connected",
		Reason:  "payload is not JSON: invalid character 'x' looking for beginning of value",
		Payload: []byte("xyz"),
	}
	m := d.Msg()
	if m.Subject != "deadletter.v1.ingest.emqx_sys_v5" {
		t.Fatalf("subject %q", m.Subject)
	}
	if string(m.Data) != "xyz" {
		t.Fatalf("payload %q", m.Data)
	}
	wantHeader := nats.Header{
		"Nats-Msg-Id":       {events.ContentID("deadletter.v1", d.Stage, d.Source, d.Topic, string(d.Payload))},
		"Fleetwatch-Reason": {d.Reason},
		"Fleetwatch-Stage":  {"ingest"},
		"Fleetwatch-Source": {"emqx_sys_v5"},
		"Fleetwatch-Topic":  {d.Topic},
	}
	if !headersEqual(m.Header, wantHeader) {
		t.Fatalf("headers %v, want %v", m.Header, wantHeader)
	}

	noTopic := d
	noTopic.Topic = ""
	if got := noTopic.Msg().Header; got.Get(events.HeaderTopic) != "" || len(got) != 4 {
		t.Fatalf("headers without a topic: %v", got)
	}

	// The id depends on the input, not on why it was rejected.
	idOf := func(d events.DeadLetter) string { return d.Msg().Header.Get(events.HeaderMsgID) }
	otherReason := d
	otherReason.Reason = "another reason"
	if idOf(otherReason) != idOf(d) {
		t.Error("the reason changed the dead letter's id")
	}
	for name, modify := range map[string]func(*events.DeadLetter){
		"stage":   func(d *events.DeadLetter) { d.Stage = "evaluator" },
		"source":  func(d *events.DeadLetter) { d.Source = "emqx_sys_v4" },
		"topic":   func(d *events.DeadLetter) { d.Topic = "other" },
		"payload": func(d *events.DeadLetter) { d.Payload = []byte("xyz ") },
	} {
		changed := d
		modify(&changed)
		if idOf(changed) == idOf(d) {
			t.Errorf("changing the %s kept the id", name)
		}
	}
}

func TestDeadLetterReasonIsBounded(t *testing.T) {
	tests := []struct {
		name   string
		reason string
		want   string
	}{
		{"at the limit", strings.Repeat("r", events.MaxReasonLen), strings.Repeat("r", events.MaxReasonLen)},
		{"ascii cut", strings.Repeat("r", 3000), strings.Repeat("r", events.MaxReasonLen)},
		// 1 + 2*600 bytes: the cut at 1024 falls inside "é" and backs off.
		{"cut on a rune boundary", "x" + strings.Repeat("é", 600), "x" + strings.Repeat("é", 511)},
		{"four-byte runes", strings.Repeat("🚀", 300), strings.Repeat("🚀", 256)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := events.DeadLetter{Stage: "ingest", Source: "s", Reason: tt.reason}.Msg().Header.Get(events.HeaderReason)
			if got != tt.want {
				t.Fatalf("reason header is %d bytes %.20q…, want %d bytes", len(got), got, len(tt.want))
			}
		})
	}
}

func TestPublishDeadLetter(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	tp := events.DefaultTopology()
	tp.MemoryStorage = true
	if err := events.EnsureStreams(ctx, js, tp); err != nil {
		t.Fatal(err)
	}
	d := events.DeadLetter{
		Stage:   "ingest",
		Source:  "webhook",
		Topic:   "/webhook/emqx",
		Reason:  "line 1: unknown field \"foo\"\nline 2: kind is empty",
		Payload: []byte(`{"foo":1}`),
	}
	for range 2 { // a redelivered poison message is stored once
		if err := events.PublishDeadLetter(ctx, js, d); err != nil {
			t.Fatal(err)
		}
	}
	if n := streamMsgs(t, js, events.StreamDeadLetter); n != 1 {
		t.Fatalf("DEADLETTER holds %d messages, want 1", n)
	}
	stream, err := js.Stream(ctx, events.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "deadletter.v1.ingest.webhook" || string(m.Data) != `{"foo":1}` {
		t.Fatalf("stored %q %q", m.Subject, m.Data)
	}
	// Header values cannot hold line breaks: the client turns them into spaces.
	want := nats.Header{
		"Nats-Msg-Id":       {d.Msg().Header.Get(events.HeaderMsgID)},
		"Fleetwatch-Reason": {`line 1: unknown field "foo" line 2: kind is empty`},
		"Fleetwatch-Stage":  {"ingest"},
		"Fleetwatch-Source": {"webhook"},
		"Fleetwatch-Topic":  {"/webhook/emqx"},
	}
	if !headersEqual(m.Header, want) {
		t.Fatalf("stored headers %v, want %v", m.Header, want)
	}
}

func TestPublishDeadLetterWithoutStream(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	err := events.PublishDeadLetter(t.Context(), js, events.DeadLetter{Stage: "ingest", Source: "emqx_sys_v5", Payload: []byte("x")})
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("error %v, want ErrNoStreamResponse", err)
	}
	if want := "publish dead letter (ingest/emqx_sys_v5): "; err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

func TestConsumerConfig(t *testing.T) {
	got := events.ConsumerConfig(events.ConsumerEvaluator, events.PresencePartitionFilter(3), 30*time.Second, 1000)
	want := jetstream.ConsumerConfig{
		Durable:       "evaluator",
		FilterSubject: "presence.v1.3.*",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ConsumerConfig = %+v, want %+v", got, want)
	}
}

func TestEnsureConsumer(t *testing.T) {
	s := natstest.Start(t)
	_, js := s.Connect(t)
	ctx := t.Context()
	tp := events.DefaultTopology()
	tp.MemoryStorage = true
	if err := events.EnsureStreams(ctx, js, tp); err != nil {
		t.Fatal(err)
	}

	// One partition's consumer sees that partition's devices only.
	mine, other := "dev-42", "dev-1" // partitions 37 and 54 of 64
	p := events.Partition(mine, events.DefaultPartitions)
	cfg := events.ConsumerConfig(events.ConsumerEvaluator, events.PresencePartitionFilter(p), 30*time.Second, 1000)
	for i := range 2 {
		c, err := events.EnsureConsumer(ctx, js, events.StreamPresence, cfg)
		if err != nil {
			t.Fatalf("EnsureConsumer call %d: %v", i+1, err)
		}
		info := c.CachedInfo()
		if info.Name != "evaluator" || info.Config.FilterSubject != "presence.v1.37.*" || info.Config.AckPolicy != jetstream.AckExplicitPolicy ||
			info.Config.AckWait != 30*time.Second || info.Config.MaxDeliver != -1 || info.Config.MaxAckPending != 1000 {
			t.Fatalf("consumer after call %d: %+v", i+1, info.Config)
		}
	}
	stream, err := js.Stream(ctx, events.StreamPresence)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range stream.ConsumerNames(ctx).Name() {
		names = append(names, name)
	}
	if !slices.Equal(names, []string{"evaluator"}) {
		t.Fatalf("consumers %v, want [evaluator]", names)
	}

	pub(t, js, events.PresenceSubject(mine, events.DefaultPartitions), "a", []byte("{}"))
	pub(t, js, events.PresenceSubject(other, events.DefaultPartitions), "b", []byte("{}"))
	c, err := stream.Consumer(ctx, "evaluator")
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 1
	})

	// A changed definition updates the consumer in place.
	cfg.AckWait = time.Minute
	c, err = events.EnsureConsumer(ctx, js, events.StreamPresence, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.AckWait; got != time.Minute {
		t.Fatalf("AckWait %v after update, want 1m", got)
	}

	_, err = events.EnsureConsumer(ctx, js, "NOPE", cfg)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("missing stream: error %v, want ErrStreamNotFound", err)
	}
	if want := "create or update consumer evaluator on NOPE: "; err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}

func pub(t *testing.T, js jetstream.JetStream, subject, id string, data []byte) *jetstream.PubAck {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, id)
	ack, err := js.PublishMsg(t.Context(), m)
	if err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
	return ack
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().State.Msgs
}

func headersEqual(got, want nats.Header) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			return false
		}
	}
	return true
}
