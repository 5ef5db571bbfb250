package ingest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/nats-io/nats.go/jetstream"
)

// knownNodes keeps the broker nodes ingest has heard in a JetStream KV
// bucket (ingest.health.bucket), so that a node that is already down when
// ingest starts is reported silent too: at start every recorded node is
// seeded into the watcher, and one not heard within silent_after from then
// is reported, with its recorded last heartbeat. A node recorded as silent
// is not reported again, but back when heard. Every replica reads and
// writes the same records (last writer wins: they hear the same
// heartbeats). A node silent for forget_after expires from the bucket.
//
// It runs on the health loop only; errors are logged and retried at the
// next check.
type knownNodes struct {
	s       *Service
	kv      jetstream.KeyValue // nil until the bucket is open
	seeded  bool
	written map[string]writtenNode
	failing bool // the last attempt failed (logged once per streak)
}

// writtenNode is what this replica last wrote for a node.
type writtenNode struct {
	silent bool
	at     time.Time
}

// nodeRecord is a node as the bucket keeps it.
type nodeRecord struct {
	Node        string `json:"node"`
	LastHeardMS int64  `json:"last_heard_ms"`
	Mark        string `json:"mark,omitempty"`
	Silent      bool   `json:"silent,omitempty"`
}

// nodeKey is the bucket key of a node: KV keys allow only [-/_=.a-zA-Z0-9],
// node names (emqx@10.0.0.1) more.
func nodeKey(node string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(node))
}

// sync opens the bucket, seeds the watcher from it once, and writes the
// nodes whose record is new, changed or due for a refresh.
func (k *knownNodes) sync(ctx context.Context) {
	if err := k.syncErr(ctx); err != nil {
		if !k.failing && ctx.Err() == nil {
			k.s.log.Warn("known broker nodes: bucket unavailable; retrying at every check (nodes already down at start may go unreported until then)",
				"bucket", k.s.cfg.Health.Bucket, "err", err)
		}
		k.failing = true
		return
	}
	if k.failing {
		k.s.log.Info("known broker nodes: bucket available again", "bucket", k.s.cfg.Health.Bucket)
	}
	k.failing = false
}

func (k *knownNodes) syncErr(ctx context.Context) error {
	h := k.s.cfg.Health
	if k.kv == nil {
		kv, err := events.EnsureKeyValue(ctx, k.s.js, jetstream.KeyValueConfig{
			Bucket:      h.Bucket,
			Description: "fleetwatch ingest: the broker nodes heard, so that one already down at start is reported",
			History:     1,
			TTL:         h.ForgetAfter,
			Storage:     jetstream.FileStorage,
			Replicas:    h.Replicas,
		})
		if err != nil {
			return err
		}
		k.kv = kv
	}
	if !k.seeded {
		if err := k.seed(ctx); err != nil {
			return err
		}
		k.seeded = true
	}
	now := k.s.now()
	for _, st := range k.s.watcher.Nodes() {
		w, ok := k.written[st.Node]
		// Silent nodes are written once, so that they expire after
		// forget_after; live ones are refreshed every silent_after.
		if ok && w.silent == st.Silent && (st.Silent || now.Sub(w.at) < h.SilentAfter) {
			continue
		}
		rec, err := json.Marshal(nodeRecord{Node: st.Node, LastHeardMS: st.LastHeard.UnixMilli(), Mark: st.Mark, Silent: st.Silent})
		if err != nil {
			return err
		}
		if _, err := k.kv.Put(ctx, nodeKey(st.Node), rec); err != nil {
			return fmt.Errorf("record node %s: %w", st.Node, err)
		}
		k.written[st.Node] = writtenNode{silent: st.Silent, at: now}
	}
	return nil
}

// seed makes the watcher know every recorded node.
func (k *knownNodes) seed(ctx context.Context) error {
	lister, err := k.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list known nodes: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	now := k.s.now()
	n := 0
	for key := range lister.Keys() {
		e, err := k.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("read known node %s: %w", key, err)
		}
		var rec nodeRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Node == "" || nodeKey(rec.Node) != key {
			k.s.log.Warn("known broker nodes: ignoring a record that is not ingest's", "key", key)
			continue
		}
		k.s.watcher.Seed(rec.Node, time.UnixMilli(rec.LastHeardMS), rec.Mark, rec.Silent, now)
		// Rewritten when its state changes (or, live, at the refresh):
		// not at every start, or a dead node would never expire.
		k.written[rec.Node] = writtenNode{silent: rec.Silent, at: now}
		n++
	}
	k.s.log.Info("known broker nodes loaded: each is reported silent unless heard within silent_after",
		"nodes", n, "silent_after", k.s.cfg.Health.SilentAfter)
	return nil
}
