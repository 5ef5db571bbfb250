// Package chtest connects tests to a real ClickHouse server and gives each
// test a fresh database of its own, dropped when the test ends.
//
// The server address comes from FLEETWATCH_CLICKHOUSE_ADDR (default
// 127.0.0.1:9000, native protocol). When the server cannot be reached the
// test fails if the CI environment variable is set, and is skipped with a
// message otherwise: tests never pass silently without ClickHouse in CI.
package chtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DefaultAddr is the ClickHouse address used when FLEETWATCH_CLICKHOUSE_ADDR
// is not set.
const DefaultAddr = "127.0.0.1:9000"

// Addr returns the address of the test ClickHouse server.
func Addr() string {
	if a := os.Getenv("FLEETWATCH_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return DefaultAddr
}

// Open connects to the test server (LZ4, native protocol) and pings it. It
// fails the test in CI and skips it elsewhere when the server is unreachable.
// The connection is closed when the test ends.
func Open(t testing.TB) driver.Conn {
	t.Helper()
	addr := Addr()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.Native,
		Addr:        []string{addr},
		DialTimeout: 2 * time.Second,
		Compression: &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = conn.Ping(ctx)
		cancel()
		if err != nil {
			_ = conn.Close()
		}
	}
	if err != nil {
		Unreachable(t, addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Unreachable stops the test because ClickHouse at addr cannot be used:
// t.Fatal when the CI environment variable is set, t.Skip otherwise.
func Unreachable(t testing.TB, addr string, err error) {
	t.Helper()
	msg := "ClickHouse is not reachable at " + addr + " (set FLEETWATCH_CLICKHOUSE_ADDR to a native-protocol host:port, or start clickhouse-server): " + err.Error()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// DatabaseName returns a new unique database name starting with prefix
// "fwtest_".
func DatabaseName(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random database name: %v", err)
	}
	return "fwtest_" + hex.EncodeToString(b[:])
}

// FreshDatabase returns the name of a database that does not exist yet and
// drops it (if it was created) when the test ends.
func FreshDatabase(t testing.TB, conn driver.Conn) string {
	t.Helper()
	name := DatabaseName(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return name
}

// Count runs a query returning one UInt64 (such as SELECT count() ...).
func Count(t testing.TB, conn driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
