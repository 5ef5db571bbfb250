package natstest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events/natstest"
	"github.com/nats-io/nats.go"
)

func TestProxyCutAndRestore(t *testing.T) {
	s := natstest.Start(t)
	p := natstest.StartProxy(t, s.URL())
	if !strings.HasPrefix(p.URL(), "nats://127.0.0.1:") || p.URL() == s.URL() {
		t.Fatalf("proxy URL %q: want another loopback port than %s", p.URL(), s.URL())
	}
	disconnected := make(chan struct{}, 1)
	signal := func(ch chan struct{}) func(*nats.Conn, error) {
		return func(*nats.Conn, error) {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	nc, err := nats.Connect(p.URL(),
		nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.DisconnectErrHandler(signal(disconnected)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := nc.Request("$JS.API.INFO", nil, 2*time.Second); err != nil {
		t.Fatalf("request through the proxy: %v", err)
	}

	p.Cut()
	select {
	case <-disconnected:
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected by Cut")
	}
	// Reconnect attempts are refused while cut.
	natstest.Eventually(t, 5*time.Second, func() bool { return p.Refused() >= 2 })
	if nc.IsConnected() {
		t.Fatal("client reconnected through a cut proxy")
	}

	p.Restore()
	natstest.Eventually(t, 5*time.Second, nc.IsConnected)
	if _, err := nc.Request("$JS.API.INFO", nil, 2*time.Second); err != nil {
		t.Fatalf("request after Restore: %v", err)
	}
}
