package archiver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
)

// Stream names accepted in Config.Streams.
const (
	StreamPresence   = "presence"
	StreamAlerts     = "alerts"
	StreamDeliveries = "deliveries"
)

// AllStreams lists every archivable stream, in the default order.
func AllStreams() []string { return []string{StreamPresence, StreamAlerts, StreamDeliveries} }

// Config is the archiver's section of a config file.
type Config struct {
	// ClickHouse says where to write.
	ClickHouse ClickHouseConfig `yaml:"clickhouse"`
	// BatchSize is the most rows per INSERT (and per JetStream fetch).
	BatchSize int `yaml:"batch_size"`
	// BatchWait is the longest a message waits for its batch to fill.
	BatchWait time.Duration `yaml:"batch_wait"`
	// Streams lists the streams to archive: presence, alerts, deliveries.
	Streams []string `yaml:"streams"`
	// AckWait is the consumers' JetStream ack wait. Messages of a batch
	// whose insert is being retried are kept alive with in-progress acks,
	// so it only bounds how fast a crashed archiver's batch is redelivered.
	AckWait time.Duration `yaml:"ack_wait"`
	// InflightBatches is the most batches of one stream an archiver holds
	// at once, between fetch and ack: one is being fetched while the
	// others are decoded and inserted, so up to this many INSERTs per
	// stream run at once. Each batch acks its own messages after its
	// INSERT succeeded.
	InflightBatches int `yaml:"inflight_batches"`
	// MaxAckPending bounds un-acked messages per consumer across replicas
	// (0: 2 × inflight_batches × batch_size, room for two replicas'
	// batches).
	MaxAckPending int `yaml:"max_ack_pending"`
	// InsertTimeout bounds one INSERT attempt.
	InsertTimeout time.Duration `yaml:"insert_timeout"`
	// Retry is the backoff between attempts of a failed INSERT (and of the
	// start-up schema migration while ClickHouse is unreachable).
	Retry RetryConfig `yaml:"retry"`
}

// ClickHouseConfig says how to reach ClickHouse (native protocol).
type ClickHouseConfig struct {
	// Addr lists host:port of native-protocol endpoints (port 9000, or 9440
	// with TLS); they are tried in order.
	Addr []string `yaml:"addr"`
	// Database receives the tables; it is created when missing.
	Database string `yaml:"database"`
	// Username to log in with.
	Username string `yaml:"username"`
	// PasswordFile or PasswordEnv hold the password (none: empty password).
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// TLS settings for the connection.
	TLS TLSConfig `yaml:"tls"`
	// DialTimeout bounds opening one connection.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Cluster, when set, is the ClickHouse cluster (remote_servers) the
	// schema is created on: ON CLUSTER DDL, Replicated* tables
	// <table>_local and Distributed tables <table> (see schema.Layout).
	// Inserts into the Distributed tables are synchronous.
	Cluster string `yaml:"cluster"`
	// ZooKeeperPrefix roots the replication paths in a cluster (default
	// /clickhouse/tables).
	ZooKeeperPrefix string `yaml:"zookeeper_prefix"`
	// RetentionDays deletes rows older than this many days with a table
	// TTL (ClickHouse 19.6+); 0 keeps everything.
	RetentionDays int `yaml:"retention_days"`
}

// migrateOptions are the schema options of this configuration.
func (c ClickHouseConfig) migrateOptions(logger *slog.Logger) schema.Options {
	return schema.Options{Logger: logger, Cluster: c.Cluster, ZooKeeperPrefix: c.ZooKeeperPrefix, RetentionDays: c.RetentionDays}
}

// TLSConfig configures TLS to ClickHouse.
type TLSConfig struct {
	// Enable turns TLS on; the other fields only apply when it is on.
	Enable bool `yaml:"enable"`
	// CAFile verifies the server (default: the system roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate, for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables server verification (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// RetryConfig is an exponential backoff: Initial, doubled per failure, at
// most Max.
type RetryConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
}

// DefaultConfig returns the defaults: a local ClickHouse, database
// fleetwatch, batches of 5000 rows or 1 s, 4 batches in flight per stream,
// all three streams.
func DefaultConfig() Config {
	return Config{
		ClickHouse: ClickHouseConfig{
			Addr:        []string{"127.0.0.1:9000"},
			Database:    "fleetwatch",
			Username:    "default",
			DialTimeout: 5 * time.Second,
		},
		BatchSize:       50_000,
		BatchWait:       time.Second,
		InflightBatches: 2,
		Streams:         AllStreams(),
		AckWait:         30 * time.Second,
		InsertTimeout:   30 * time.Second,
		Retry:           RetryConfig{Initial: 250 * time.Millisecond, Max: 30 * time.Second},
	}
}

// maxAckPending is the effective MaxAckPending.
func (c Config) maxAckPending() int {
	if c.MaxAckPending == 0 {
		return 2 * c.InflightBatches * c.BatchSize
	}
	return c.MaxAckPending
}

// Validate checks the settings without touching the network.
func (c Config) Validate() error {
	if err := c.ClickHouse.validate(); err != nil {
		return err
	}
	switch {
	case c.BatchSize < 1 || c.BatchSize > 1_000_000:
		return fmt.Errorf("archiver.batch_size is %d: use 1 to 1000000, e.g. 50000", c.BatchSize)
	case c.BatchWait <= 0:
		return fmt.Errorf("archiver.batch_wait is %s: use a positive duration, e.g. 1s", c.BatchWait)
	case c.AckWait < time.Second:
		return fmt.Errorf("archiver.ack_wait is %s: use at least 1s, e.g. 30s", c.AckWait)
	case c.BatchWait*2 > c.AckWait:
		return fmt.Errorf("archiver.batch_wait %s is more than half of archiver.ack_wait %s: lower batch_wait or raise ack_wait", c.BatchWait, c.AckWait)
	case c.InflightBatches < 1 || c.InflightBatches > 64:
		return fmt.Errorf("archiver.inflight_batches is %d: use 1 to 64, e.g. 2", c.InflightBatches)
	case c.MaxAckPending != 0 && c.MaxAckPending < c.BatchSize:
		return fmt.Errorf("archiver.max_ack_pending %d is below archiver.batch_size %d: raise it (or 0 for 2 × inflight_batches × batch_size)", c.MaxAckPending, c.BatchSize)
	case c.InsertTimeout <= 0:
		return fmt.Errorf("archiver.insert_timeout is %s: use a positive duration, e.g. 30s", c.InsertTimeout)
	case c.Retry.Initial <= 0:
		return fmt.Errorf("archiver.retry.initial is %s: use a positive duration, e.g. 250ms", c.Retry.Initial)
	case c.Retry.Max < c.Retry.Initial:
		return fmt.Errorf("archiver.retry.max %s is below archiver.retry.initial %s: raise it, e.g. 30s", c.Retry.Max, c.Retry.Initial)
	case len(c.Streams) == 0:
		return fmt.Errorf("archiver.streams is empty: list at least one of %s", strings.Join(AllStreams(), ", "))
	}
	for i, s := range c.Streams {
		if !slices.Contains(AllStreams(), s) {
			return fmt.Errorf("archiver.streams[%d] is %q: use %s", i, s, strings.Join(AllStreams(), ", "))
		}
		if slices.Contains(c.Streams[:i], s) {
			return fmt.Errorf("archiver.streams lists %q twice: keep one", s)
		}
	}
	return nil
}

func (c ClickHouseConfig) validate() error {
	if len(c.Addr) == 0 {
		return errors.New("archiver.clickhouse.addr is empty: list the native endpoints, e.g. [127.0.0.1:9000]")
	}
	for i, a := range c.Addr {
		if strings.Contains(a, "://") {
			return fmt.Errorf("archiver.clickhouse.addr[%d] is %q: write host:port without a scheme (native protocol, port 9000 or 9440 with tls)", i, a)
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("archiver.clickhouse.addr[%d] is %q: use host:port, e.g. 127.0.0.1:9000", i, a)
		}
	}
	if err := schema.CheckDatabaseName(c.Database); err != nil {
		return fmt.Errorf("archiver.clickhouse.database: %w", err)
	}
	if c.PasswordFile != "" && c.PasswordEnv != "" {
		return errors.New("archiver.clickhouse.password_file and archiver.clickhouse.password_env are both set: keep one")
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("archiver.clickhouse.dial_timeout is %s: use a positive duration, e.g. 5s", c.DialTimeout)
	}
	if c.ZooKeeperPrefix != "" && c.Cluster == "" {
		return errors.New("archiver.clickhouse.zookeeper_prefix is set but cluster is empty: set cluster or remove it")
	}
	if err := (schema.Layout{Database: c.Database, Cluster: c.Cluster, ZooKeeperPrefix: c.ZooKeeperPrefix, RetentionDays: c.RetentionDays}).Check(); err != nil {
		return fmt.Errorf("archiver.clickhouse: %w", err)
	}
	t := c.TLS
	if !t.Enable && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		return errors.New("archiver.clickhouse.tls has settings but tls.enable is false: set enable: true or remove them")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("archiver.clickhouse.tls.cert_file and key_file go together: set both or neither")
	}
	return nil
}
