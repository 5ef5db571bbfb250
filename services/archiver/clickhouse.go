package archiver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/fleetwatch/fleetwatch/pkg/events/natsconn"
)

// openClickHouse builds the connection pool (no network traffic yet). The
// connection has no default database: the archiver's database may not
// exist before the first migration, and every statement names it.
func openClickHouse(c ClickHouseConfig, poolSize int) (driver.Conn, error) {
	password, err := natsconn.Secret("archiver.clickhouse.password", c.PasswordFile, c.PasswordEnv)
	if err != nil {
		return nil, err
	}
	tlsConfig, err := c.TLS.build()
	if err != nil {
		return nil, err
	}
	var settings clickhouse.Settings
	if c.Cluster != "" {
		// Acknowledge an insert into a Distributed table only once the
		// shards stored it, not when it is queued on the local node.
		settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Settings:         settings,
		Protocol:         clickhouse.Native,
		Addr:             c.Addr,
		Auth:             clickhouse.Auth{Username: c.Username, Password: password},
		TLS:              tlsConfig,
		DialTimeout:      c.DialTimeout,
		Compression:      &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
		ConnOpenStrategy: clickhouse.ConnOpenInOrder,
		MaxOpenConns:     poolSize,
		MaxIdleConns:     poolSize,
		ClientInfo: clickhouse.ClientInfo{Products: []struct{ Name, Version string }{
			{Name: "fleetwatch-archiver", Version: "1"},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("archiver.clickhouse: %w", err)
	}
	return conn, nil
}

func (t TLSConfig) build() (*tls.Config, error) {
	if !t.Enable {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented test-only setting
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("archiver.clickhouse.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("archiver.clickhouse.tls.ca_file holds no PEM certificate: point it at the CA's .pem file")
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("archiver.clickhouse.tls.cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// OpenClickHouse opens a connection pool of poolSize connections to the
// configured ClickHouse, for tools that query the archive (the report and
// replay commands). It does not touch the network until first use.
func OpenClickHouse(c ClickHouseConfig, poolSize int) (driver.Conn, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	return openClickHouse(c, max(poolSize, 1))
}
