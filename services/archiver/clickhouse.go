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
	conn, err := clickhouse.Open(&clickhouse.Options{
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
