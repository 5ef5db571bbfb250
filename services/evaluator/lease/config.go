package lease

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// DefaultBucket is the KV bucket holding the leases and the membership.
const DefaultBucket = "fleetwatch_evaluator_leases"

// Config says which replica this is, how many partitions there are and how
// long a lease lives. Every replica of a deployment must use the same
// Partitions and Bucket; TTL, Renew and Margin may differ between replicas
// (each lease carries its writer's TTL).
type Config struct {
	// Replica names this replica among the evaluator replicas, e.g. the pod
	// name: letters, digits, "-" and "_". Two running replicas must never
	// share a name.
	Replica string `yaml:"replica"`
	// Partitions is the deployment's presence partition count (default
	// events.DefaultPartitions); it must match the ingest's.
	Partitions int `yaml:"partitions"`
	// Bucket is the KV bucket (default DefaultBucket).
	Bucket string `yaml:"bucket"`
	// BucketReplicas is the bucket's replica count when this replica creates
	// it: 1 in development, 3 on a production cluster (default 1).
	BucketReplicas int `yaml:"bucket_replicas"`
	// TTL is how long a lease (and a membership heartbeat) lives without
	// renewal: the longest a partition stays unprocessed after its owner
	// died abruptly. Whole seconds, at least 1s (default 10s).
	TTL time.Duration `yaml:"ttl"`
	// Renew is how often leases and the heartbeat are renewed and the
	// partitions rebalanced (default TTL/5). At most (TTL-Margin)/2, so that a
	// lease gets at least two renewal attempts before it must be given up.
	Renew time.Duration `yaml:"renew"`
	// Margin is how long before its earliest possible expiry a lease that
	// could not be renewed is given up (default TTL/5): it must cover the
	// time the evaluator takes to stop processing a partition after its
	// context is cancelled, timer and scheduling delays, and the clock skew
	// between NATS servers.
	Margin time.Duration `yaml:"margin"`
	// ShutdownTimeout bounds how long Run waits, once its context ends, for
	// the Release callbacks and the release of the leases (default 30s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// replicaName is what a replica name may contain: it becomes a KV key token.
var replicaName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// bucketName is what JetStream accepts as a KV bucket name.
var bucketName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// WithDefaults returns c with its zero fields filled, as New does.
func (c Config) WithDefaults() Config { return c.withDefaults() }

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Partitions == 0 {
		c.Partitions = events.DefaultPartitions
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.BucketReplicas == 0 {
		c.BucketReplicas = 1
	}
	if c.TTL == 0 {
		c.TTL = 10 * time.Second
	}
	if c.Renew == 0 {
		c.Renew = c.TTL / 5
	}
	if c.Margin == 0 {
		c.Margin = c.TTL / 5
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	return c
}

// Validate checks a config after defaults were applied.
func (c Config) Validate() error {
	switch {
	case c.Replica == "":
		return errors.New("evaluator.lease.replica is empty: set a name unique among the evaluator replicas, e.g. the pod name")
	case !replicaName.MatchString(c.Replica):
		return fmt.Errorf("evaluator.lease.replica %q: use 1 to 128 letters, digits, - and _, e.g. evaluator-0", c.Replica)
	case c.Partitions < 1:
		return fmt.Errorf("evaluator.lease.partitions is %d: use the ingest's partition count (default %d)", c.Partitions, events.DefaultPartitions)
	case !bucketName.MatchString(c.Bucket):
		return fmt.Errorf("evaluator.lease.bucket %q: use letters, digits, - and _, e.g. %s", c.Bucket, DefaultBucket)
	case c.BucketReplicas < 1 || c.BucketReplicas > 5:
		return fmt.Errorf("evaluator.lease.bucket_replicas is %d: use 1 to 5 (3 on a production cluster)", c.BucketReplicas)
	case c.TTL < time.Second || c.TTL%time.Second != 0:
		return fmt.Errorf("evaluator.lease.ttl is %s: use whole seconds, at least 1s (JetStream counts per-key TTLs in seconds), e.g. 10s", c.TTL)
	case c.Margin <= 0 || c.Margin >= c.TTL:
		return fmt.Errorf("evaluator.lease.margin is %s: use a positive duration below evaluator.lease.ttl %s, e.g. %s", c.Margin, c.TTL, c.TTL/5)
	case c.Renew <= 0 || 2*c.Renew > c.TTL-c.Margin:
		return fmt.Errorf("evaluator.lease.renew is %s: use a positive duration of at most (ttl - margin)/2 = %s, e.g. %s", c.Renew, (c.TTL-c.Margin)/2, c.TTL/5)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("evaluator.lease.shutdown_timeout is %s: use a positive duration, e.g. 30s", c.ShutdownTimeout)
	}
	return nil
}
