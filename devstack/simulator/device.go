// Package simulator runs simulated MQTT devices: real paho clients that
// connect to a broker, drop at random (abruptly, by closing the socket, or
// cleanly) and come back, plus mass outages on demand.
package simulator

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ErrNotConnected is returned when an operation needs a connected device.
var ErrNotConnected = errors.New("device not connected")

// Device is one simulated device: a paho client whose socket can be cut.
// Every Connect uses a fresh paho client, as a rebooted device would: paho
// does not reliably return to "disconnected" after its socket is cut.
type Device struct {
	id   string
	opts *mqtt.ClientOptions

	mu     sync.Mutex
	client mqtt.Client
	conn   net.Conn
	up     bool // connected, as far as the device knows
}

// DeviceOptions tunes a device's MQTT session.
type DeviceOptions struct {
	// Username is sent on connect when set.
	Username string
	// Keepalive in seconds (default 30).
	Keepalive time.Duration
	// ConnectTimeout bounds a connect (default 5s).
	ConnectTimeout time.Duration
}

// NewDevice creates a device with client id id for the broker at brokerURL
// (tcp://host:port). It does not connect.
func NewDevice(brokerURL, id string, o DeviceOptions) *Device {
	if o.Keepalive == 0 {
		o.Keepalive = 30 * time.Second
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	d := &Device{id: id}
	d.opts = mqtt.NewClientOptions().
		AddBroker(brokerURL).
		SetClientID(id).
		SetUsername(o.Username).
		SetKeepAlive(o.Keepalive).
		SetConnectTimeout(o.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(true).
		SetCustomOpenConnectionFn(d.dial).
		SetConnectionLostHandler(func(mqtt.Client, error) { d.setUp(false) })
	return d
}

func (d *Device) dial(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", u.Host, o.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.conn = c
	d.mu.Unlock()
	return c, nil
}

// ID is the device's MQTT client id.
func (d *Device) ID() string { return d.id }

// Connect opens a new MQTT session and waits for CONNACK.
func (d *Device) Connect() error {
	c := mqtt.NewClient(d.opts)
	d.mu.Lock()
	d.client = c
	d.mu.Unlock()
	t := c.Connect()
	if !t.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("device %s: connect timed out", d.id)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("device %s: connect: %w", d.id, err)
	}
	d.setUp(true)
	return nil
}

func (d *Device) setUp(up bool) {
	d.mu.Lock()
	d.up = up
	d.mu.Unlock()
}

// Connected reports whether the session is up: connected and not killed,
// disconnected or lost since.
func (d *Device) Connected() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.up
}

// Kill cuts the TCP connection without an MQTT DISCONNECT, as a device that
// loses power or network would; the broker sees the socket close.
func (d *Device) Kill() error {
	d.mu.Lock()
	c := d.conn
	d.conn = nil
	d.up = false
	d.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	return c.Close()
}

// Disconnect sends an MQTT DISCONNECT (reason "normal" at the broker).
func (d *Device) Disconnect() {
	d.mu.Lock()
	c := d.client
	d.conn = nil
	d.up = false
	d.mu.Unlock()
	if c != nil {
		c.Disconnect(250)
	}
}
