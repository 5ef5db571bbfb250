// Package natstest starts an embedded nats-server with JetStream for tests:
// a random port, a temporary store directory, shut down when the test ends.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
	storeDir string
}

// Start runs a JetStream-enabled server on a random loopback port with its
// store in t.TempDir(), and shuts it down in t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("start embedded nats-server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// New runs a JetStream-enabled server on a random loopback port with its
// store in storeDir. The caller shuts it down.
func New(storeDir string) (*Server, error) {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  storeDir,
		// JetStream reserves each stream's MaxBytes up front against these
		// limits (75% of RAM and disk by default): with the default
		// topology (4 streams x 8 GiB) memory-storage tests would fail with
		// "insufficient memory resources" on most machines. The limits are
		// bookkeeping only; tests store a few kilobytes.
		JetStreamMaxMemory: maxResources,
		JetStreamMaxStore:  maxResources,
		NoLog:              true,
		NoSigs:             true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errNotReady
	}
	return &Server{Server: ns, storeDir: storeDir}, nil
}

// maxResources is the memory and store limit of a test server: 1 TiB.
const maxResources = 1 << 40

type notReadyError struct{}

func (notReadyError) Error() string { return "nats-server not ready for connections within 10s" }

var errNotReady error = notReadyError{}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ClientURL() }

// StoreDir is where JetStream keeps its files.
func (s *Server) StoreDir() string { return s.storeDir }

// Connect opens a client connection that is closed when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("connect to embedded nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream context: %v", err)
	}
	return nc, js
}

// Eventually polls cond every 10ms until it returns true, and fails the test
// if it has not within timeout. Use it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
