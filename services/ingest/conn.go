package ingest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/net/proxy"
)

// readBufferSize is the receive buffer of the broker connection: about two
// hundred presence messages per read system call.
const readBufferSize = 64 << 10

// bufferedConn reads the broker connection through a buffer. paho reads a
// packet's fixed header byte by byte and then its body, straight from the
// connection: unbuffered, that is three or more system calls per message,
// the largest part of paho's cost per message.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openConn is paho's connection opener for tcp/mqtt and ssl/tls/mqtts
// brokers, including its proxy handling (all_proxy, no_proxy), with reads
// buffered.
func openConn(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	var conn net.Conn
	var err error
	switch u.Scheme {
	case "tcp", "mqtt":
		conn, err = proxy.FromEnvironmentUsing(dialer).Dial("tcp", u.Host)
	case "ssl", "tls", "mqtts":
		if os.Getenv("all_proxy") == "" {
			conn, err = tls.DialWithDialer(dialer, "tcp", u.Host, o.TLSConfig)
			break
		}
		var raw net.Conn
		if raw, err = proxy.FromEnvironment().Dial("tcp", u.Host); err != nil {
			break
		}
		tc := tls.Client(raw, tlsClientConfig(o.TLSConfig, u))
		if err = tc.Handshake(); err != nil {
			_ = raw.Close()
			break
		}
		conn = tc
	default:
		return nil, fmt.Errorf("unsupported broker scheme %q", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize)}, nil
}

// tlsClientConfig is c with the server name set from u when c has none,
// as tls.Dial does.
func tlsClientConfig(c *tls.Config, u *url.URL) *tls.Config {
	if c == nil {
		c = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.ServerName == "" {
		c = c.Clone()
		c.ServerName = u.Hostname()
	}
	return c
}

// noStore is paho's session store for ingest: it keeps nothing. paho stores
// each received QoS 1 PUBLISH until its PUBACK and, on a reconnect, discards
// such inbound entries anyway (only outbound packets and QoS 2 PUBRELs are
// resumed); ingest publishes nothing and re-subscribes on every connect.
// The broker's persistent session is what keeps unacknowledged messages.
// Keeping nothing saves a locked map insert and delete, with formatted keys,
// per message.
type noStore struct{}

var _ paho.Store = noStore{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}

// TuneClient gives a paho client ingest's connection tuning: buffered
// reads and no client-side session store. Benchmarks use it to measure the
// broker → client part of ingest's path on its own.
func TuneClient(o *paho.ClientOptions) *paho.ClientOptions {
	return o.SetCustomOpenConnectionFn(openConn).SetStore(noStore{})
}
