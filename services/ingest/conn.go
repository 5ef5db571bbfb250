package ingest

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"golang.org/x/net/proxy"
)

// readBufferSize is the receive buffer of the broker connection: about two
// hundred presence messages per read system call.
const readBufferSize = 64 << 10

// Write coalescing of the broker connection.
const (
	// maxPendingWrite bounds what the connection holds unsent: past it,
	// writers wait (about 16,000 PUBACKs).
	maxPendingWrite = 64 << 10
	// closeFlushTimeout bounds Close's last flush (a DISCONNECT, the last
	// PUBACKs) on a connection the broker does not read.
	closeFlushTimeout = time.Second
)

// bufferedConn reads the broker connection through a buffer and coalesces
// its writes.
//
// paho reads a packet's fixed header byte by byte and then its body,
// straight from the connection: unbuffered, that is three or more system
// calls per message, the largest part of paho's cost per message.
//
// Ingest writes a 4-byte PUBACK per message, paho a packet now and then
// (PINGREQ, SUBSCRIBE, DISCONNECT), each with a write system call of its
// own if written straight through. Here every write is appended to one
// buffer, in order, and one writer at a time sends all of it with one
// system call: the acker itself (writeNow, after appending a batch of
// PUBACKs), or a flusher goroutine for paho's writes (Write returns once
// appended). What is appended while a send is under way leaves with the
// next one. A send error is returned by the next write (paho then
// reconnects) and closes the connection, so that paho's reader stops too.
// Close sends what is still buffered (a DISCONNECT) first.
// Acknowledgements stay at least once: a PUBACK buffered when the process
// dies is never sent, and the broker redelivers its message, which
// JetStream deduplicates.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	space   sync.Cond // signalled when a writer takes pending, stops or fails
	pending []byte    // appended, not yet sent
	spare   []byte    // the previous send's buffer, for reuse
	sending bool      // a writer is sending: it sends pending too before it stops
	err     error     // the first send error; every later write returns it
	closing bool

	wake    chan struct{} // one pending wake-up of the flusher
	quit    chan struct{} // closed by Close
	flushed chan struct{} // closed when the flusher ends
	once    sync.Once
}

func newBufferedConn(conn net.Conn) *bufferedConn {
	c := &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize),
		wake: make(chan struct{}, 1), quit: make(chan struct{}), flushed: make(chan struct{})}
	c.space.L = &c.mu
	go c.flusher()
	return c
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write (paho's) appends p and leaves the sending to the flusher.
func (c *bufferedConn) Write(p []byte) (int, error) {
	if err := c.append(p); err != nil {
		return 0, err
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// writeNow appends p and sends it, with whatever else is pending, unless
// another writer is sending (it then sends p too).
func (c *bufferedConn) writeNow(p []byte) error {
	if err := c.append(p); err != nil {
		return err
	}
	c.send()
	return nil
}

// append adds p to pending; it waits while maxPendingWrite bytes are.
func (c *bufferedConn) append(p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending) >= maxPendingWrite && c.err == nil && !c.closing {
		c.space.Wait()
	}
	switch {
	case c.err != nil:
		return c.err
	case c.closing:
		return net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	return nil
}

// flusher sends what Write appended until Close, then what is left.
func (c *bufferedConn) flusher() {
	defer close(c.flushed)
	for {
		select {
		case <-c.wake:
			c.send()
		case <-c.quit:
			c.send()
			return
		}
	}
}

// send sends pending until it is empty, unless another writer is sending.
func (c *bufferedConn) send() {
	c.mu.Lock()
	if c.sending {
		c.mu.Unlock()
		return
	}
	c.sending = true
	for len(c.pending) > 0 && c.err == nil {
		buf := c.pending
		c.pending = c.spare[:0]
		c.space.Broadcast()
		c.mu.Unlock()
		_, err := c.Conn.Write(buf)
		c.mu.Lock()
		if cap(buf) <= maxPendingWrite {
			c.spare = buf[:0]
		}
		if err != nil && c.err == nil {
			c.err = err
			c.space.Broadcast()
			_ = c.Conn.Close()
		}
	}
	c.sending = false
	c.space.Broadcast()
	c.mu.Unlock()
}

// Close sends what is still pending (for at most closeFlushTimeout), then
// closes the connection.
func (c *bufferedConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closing = true
		c.space.Broadcast()
		c.mu.Unlock()
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		close(c.quit)
		<-c.flushed
		c.mu.Lock()
		for c.sending { // another writer sends the rest
			c.space.Wait()
		}
		c.mu.Unlock()
	})
	return c.Conn.Close()
}

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
	return newBufferedConn(conn), nil
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
// reads, coalesced writes and no client-side session store. Benchmarks use it to measure the
// broker → client part of ingest's path on its own.
func TuneClient(o *paho.ClientOptions) *paho.ClientOptions {
	return o.SetCustomOpenConnectionFn(openConn).SetStore(noStore{})
}
