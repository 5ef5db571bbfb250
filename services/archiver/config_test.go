package archiver

import (
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if got := DefaultConfig().maxAckPending(); got != 200_000 {
		t.Errorf("default max ack pending = %d, want 2 × 2 × 50000", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no addr", func(c *Config) { c.ClickHouse.Addr = nil },
			"archiver.clickhouse.addr is empty: list the native endpoints, e.g. [127.0.0.1:9000]"},
		{"addr with scheme", func(c *Config) { c.ClickHouse.Addr = []string{"http://ch:8123"} },
			`archiver.clickhouse.addr[0] is "http://ch:8123": write host:port without a scheme (native protocol, port 9000 or 9440 with tls)`},
		{"addr without port", func(c *Config) { c.ClickHouse.Addr = []string{"127.0.0.1:9000", "ch"} },
			`archiver.clickhouse.addr[1] is "ch": use host:port, e.g. 127.0.0.1:9000`},
		{"bad database", func(c *Config) { c.ClickHouse.Database = "fleet-watch" },
			`archiver.clickhouse.database: database name "fleet-watch": not a plain identifier: use letters, digits and _, not starting with a digit`},
		{"two password sources", func(c *Config) { c.ClickHouse.PasswordFile, c.ClickHouse.PasswordEnv = "/p", "P" },
			"archiver.clickhouse.password_file and archiver.clickhouse.password_env are both set: keep one"},
		{"dial timeout", func(c *Config) { c.ClickHouse.DialTimeout = 0 },
			"archiver.clickhouse.dial_timeout is 0s: use a positive duration, e.g. 5s"},
		{"tls settings without enable", func(c *Config) { c.ClickHouse.TLS.CAFile = "/ca.pem" },
			"archiver.clickhouse.tls has settings but tls.enable is false: set enable: true or remove them"},
		{"cert without key", func(c *Config) { c.ClickHouse.TLS = TLSConfig{Enable: true, CertFile: "/c.pem"} },
			"archiver.clickhouse.tls.cert_file and key_file go together: set both or neither"},
		{"zookeeper prefix without cluster", func(c *Config) { c.ClickHouse.ZooKeeperPrefix = "/ch" },
			"archiver.clickhouse.zookeeper_prefix is set but cluster is empty: set cluster or remove it"},
		{"bad cluster", func(c *Config) { c.ClickHouse.Cluster = "my cluster" },
			`archiver.clickhouse: cluster name "my cluster": not a plain identifier: use letters, digits and _, not starting with a digit`},
		{"negative retention", func(c *Config) { c.ClickHouse.RetentionDays = -1 },
			"archiver.clickhouse: retention of -1 days: use 0 (keep everything) or more"},
		{"batch size", func(c *Config) { c.BatchSize = 0 },
			"archiver.batch_size is 0: use 1 to 1000000, e.g. 50000"},
		{"batch wait", func(c *Config) { c.BatchWait = 0 },
			"archiver.batch_wait is 0s: use a positive duration, e.g. 1s"},
		{"ack wait", func(c *Config) { c.AckWait = 500 * time.Millisecond },
			"archiver.ack_wait is 500ms: use at least 1s, e.g. 30s"},
		{"batch wait vs ack wait", func(c *Config) { c.BatchWait = 20 * time.Second },
			"archiver.batch_wait 20s is more than half of archiver.ack_wait 30s: lower batch_wait or raise ack_wait"},
		{"max ack pending", func(c *Config) { c.MaxAckPending = 10 },
			"archiver.max_ack_pending 10 is below archiver.batch_size 50000: raise it (or 0 for 2 × inflight_batches × batch_size)"},
		{"inflight batches", func(c *Config) { c.InflightBatches = 0 },
			"archiver.inflight_batches is 0: use 1 to 64, e.g. 2"},
		{"insert timeout", func(c *Config) { c.InsertTimeout = -time.Second },
			"archiver.insert_timeout is -1s: use a positive duration, e.g. 30s"},
		{"retry initial", func(c *Config) { c.Retry.Initial = 0 },
			"archiver.retry.initial is 0s: use a positive duration, e.g. 250ms"},
		{"retry max", func(c *Config) { c.Retry.Max = time.Millisecond },
			"archiver.retry.max 1ms is below archiver.retry.initial 250ms: raise it, e.g. 30s"},
		{"no streams", func(c *Config) { c.Streams = []string{} },
			"archiver.streams is empty: list at least one of presence, alerts, deliveries"},
		{"unknown stream", func(c *Config) { c.Streams = []string{"presence", "audit"} },
			`archiver.streams[1] is "audit": use presence, alerts, deliveries`},
		{"duplicate stream", func(c *Config) { c.Streams = []string{"alerts", "alerts"} },
			`archiver.streams lists "alerts" twice: keep one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.change(&c)
			err := c.Validate()
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate() = %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestNewValidatesFirst(t *testing.T) {
	c := DefaultConfig()
	c.BatchSize = -1
	if _, err := New(c, Deps{}); err == nil || err.Error() != "archiver.batch_size is -1: use 1 to 1000000, e.g. 50000" {
		t.Fatalf("New = %v", err)
	}
	if _, err := New(DefaultConfig(), Deps{}); err == nil || err.Error() != "archiver: Deps.NATS is nil: pass a connected *nats.Conn" {
		t.Fatalf("New without NATS = %v", err)
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	b := backoff{cfg: RetryConfig{Initial: 100 * time.Millisecond, Max: time.Second}}
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, n := range nominal {
		n *= time.Millisecond
		if d := b.next(); d < n/2 || d > n {
			t.Fatalf("delay %d = %s, want within [%s, %s]", i, d, n/2, n)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %s", d)
	}
}
