package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamPresence   = "PRESENCE"
	StreamAlerts     = "ALERTS"
	StreamDeliveries = "DELIVERIES"
	StreamDeadLetter = "DEADLETTER"
	StreamNodes      = "NODES"
)

// Durable consumer names. Each consumer belongs to one stage; replicas of a
// stage share it (pull consumers spread messages across them).
const (
	ConsumerEvaluator          = "evaluator"
	ConsumerNotifier           = "notifier"
	ConsumerArchiverPresence   = "archiver-presence"
	ConsumerArchiverAlerts     = "archiver-alerts"
	ConsumerArchiverDeliveries = "archiver-deliveries"
)

// Topology sets the retention and placement of fleetwatch's streams.
type Topology struct {
	// Replicas of every stream: 1 in development, 3 in production.
	Replicas int `yaml:"replicas"`
	// MemoryStorage keeps streams in memory (tests only); file otherwise.
	MemoryStorage bool `yaml:"memory_storage"`
	// MaxAge bounds how long events are kept per stream (0: the default).
	PresenceMaxAge   time.Duration `yaml:"presence_max_age"`
	AlertsMaxAge     time.Duration `yaml:"alerts_max_age"`
	DeliveriesMaxAge time.Duration `yaml:"deliveries_max_age"`
	DeadLetterMaxAge time.Duration `yaml:"deadletter_max_age"`
	NodesMaxAge      time.Duration `yaml:"nodes_max_age"`
	// MaxBytes bounds each stream's size (-1: unlimited). JetStream reserves
	// it up front against the server's store limit, so the default is
	// modest (1 GiB per stream); production sizes it to its volume.
	MaxBytes int64 `yaml:"max_bytes"`
	// DuplicateWindow is how long Nats-Msg-Id de-duplication remembers an id.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
}

// DefaultTopology is what a single-node development deployment uses.
func DefaultTopology() Topology {
	return Topology{
		Replicas:         1,
		PresenceMaxAge:   7 * 24 * time.Hour,
		AlertsMaxAge:     30 * 24 * time.Hour,
		DeliveriesMaxAge: 30 * 24 * time.Hour,
		DeadLetterMaxAge: 30 * 24 * time.Hour,
		NodesMaxAge:      30 * 24 * time.Hour,
		MaxBytes:         1 << 30,
		DuplicateWindow:  10 * time.Minute,
	}
}

// Validate checks the topology settings.
func (t Topology) Validate() error {
	if t.Replicas < 1 || t.Replicas > 5 {
		return fmt.Errorf("topology.replicas is %d: use 1 (single server) to 5 (usually 3 in a cluster)", t.Replicas)
	}
	if t.DuplicateWindow < 0 {
		return fmt.Errorf("topology.duplicate_window is negative: use a duration such as 10m")
	}
	for _, a := range []struct {
		key string
		age time.Duration
	}{
		{"presence_max_age", t.PresenceMaxAge},
		{"alerts_max_age", t.AlertsMaxAge},
		{"deliveries_max_age", t.DeliveriesMaxAge},
		{"deadletter_max_age", t.DeadLetterMaxAge},
		{"nodes_max_age", t.NodesMaxAge},
	} {
		if a.age < 0 {
			return fmt.Errorf("topology.%s is negative: use a duration such as 168h, or 0 to keep events until max_bytes", a.key)
		}
	}
	if t.MaxBytes < -1 {
		return fmt.Errorf("topology.max_bytes is %d: use a byte count such as 1073741824 (1 GiB), or -1 for no limit", t.MaxBytes)
	}
	return nil
}

// StreamConfigs returns the definitions of every fleetwatch stream.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if t.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	mk := func(name, prefix, desc string, age time.Duration) jetstream.StreamConfig {
		dup := t.DuplicateWindow
		if age > 0 && dup > age {
			dup = age
		}
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{prefix + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      age,
			MaxBytes:    t.MaxBytes,
			Storage:     storage,
			Replicas:    t.Replicas,
			Duplicates:  dup,
		}
	}
	return []jetstream.StreamConfig{
		mk(StreamPresence, PresencePrefix, "fleetwatch device presence events (ingest → evaluator, archiver)", t.PresenceMaxAge),
		mk(StreamAlerts, AlertsPrefix, "fleetwatch alert notifications (evaluator → notifier, archiver)", t.AlertsMaxAge),
		mk(StreamDeliveries, DeliveriesPrefix, "fleetwatch delivery attempts (notifier → archiver)", t.DeliveriesMaxAge),
		mk(StreamDeadLetter, DeadLetterPrefix, "fleetwatch inputs that could not be processed, with the reason", t.DeadLetterMaxAge),
		mk(StreamNodes, NodesPrefix, "fleetwatch broker node health (ingest → evaluator, archiver)", t.NodesMaxAge),
	}
}

// EnsureStreams creates or updates every fleetwatch stream. It is idempotent
// and safe to call from every replica of every stage at start-up.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, t Topology) error {
	if err := t.Validate(); err != nil {
		return err
	}
	for _, cfg := range t.StreamConfigs() {
		// Create first, update only a stream that exists: concurrent
		// create-or-updates of a new R3 stream (every stage starting at
		// once on a fresh cluster) can go unanswered until they time out.
		_, err := js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			_, err = js.UpdateStream(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// ConsumerConfig returns the definition of a durable, explicitly acked pull
// consumer. maxAckPending bounds the messages in flight across replicas.
func ConsumerConfig(durable, filter string, ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
}

// EnsureConsumer creates or updates a durable consumer on a stream.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}

// EnsureKeyValue creates a KV bucket, or updates it when it exists. It
// creates first: on a cluster, an update racing another replica's create
// of the same new bucket can go unanswered until it times out.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.UpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("create or update kv bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// StateBucket is the configuration of a KV bucket of shared state: history
// 1, the deployment's storage (memory when memory is set, else file) and
// replicas (at least 1).
func StateBucket(bucket, description string, replicas int, memory bool) jetstream.KeyValueConfig {
	storage := jetstream.FileStorage
	if memory {
		storage = jetstream.MemoryStorage
	}
	return jetstream.KeyValueConfig{Bucket: bucket, Description: description, History: 1, Storage: storage, Replicas: max(replicas, 1)}
}
