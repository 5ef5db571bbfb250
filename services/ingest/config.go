package ingest

import (
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// ExampleConfig is config.example.yaml: a working config file for a local
// NATS and broker, shown by --help.
//
//go:embed config.example.yaml
var ExampleConfig string

// DefaultTopics are the EMQX $SYS client filters, for MQTT and gateway
// clients. They end in "#" rather than "+/connected" because a client id
// may contain "/", which adds topic levels. Other client events under them
// (subscribed/unsubscribed, when enabled in EMQX) are counted and ignored.
var DefaultTopics = []string{
	"$SYS/brokers/+/clients/#",
	"$SYS/brokers/+/gateway/+/clients/#",
}

// Config is the ingest stage's section of the config file.
type Config struct {
	// MQTT says how to reach EMQX.
	MQTT MQTTConfig `yaml:"mqtt"`
	// Partitions is the deployment's presence partition count (default
	// events.DefaultPartitions). Every stage of a deployment uses the same.
	Partitions int `yaml:"partitions"`
	// PublishTimeout bounds one JetStream publish attempt (default 5s).
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// MaxInFlight bounds the MQTT messages being published to JetStream at
	// once (default 256). Beyond it, messages wait unacknowledged.
	MaxInFlight int `yaml:"max_in_flight"`
}

// MQTTConfig is the MQTT subscriber's connection.
type MQTTConfig struct {
	// Broker is the EMQX listener URL: tcp://host:1883 or ssl://host:8883.
	Broker string `yaml:"broker"`
	// ClientID must be fixed per replica (the persistent session is keyed
	// by it) and distinct between replicas. Default:
	// fleetwatch-ingest-<hostname>.
	ClientID string `yaml:"client_id"`
	// Username, with the password read from PasswordFile or PasswordEnv.
	// The user needs subscribe rights on $SYS/brokers/+/clients/# (EMQX's
	// default ACL denies $SYS/# to all but localhost).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// TLS settings for ssl:// brokers.
	TLS TLSConfig `yaml:"tls"`
	// SharedGroup, when set, subscribes through $share/<group>/… so that
	// replicas share the load; "" subscribes plainly (one replica, or every
	// replica gets every message, which JetStream de-duplicates).
	SharedGroup string `yaml:"shared_group"`
	// Topics are the topic filters (default DefaultTopics), subscribed
	// with QoS 1.
	Topics []string `yaml:"topics"`
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// KeepAlive is the MQTT keepalive (default 30s).
	KeepAlive time.Duration `yaml:"keepalive"`
	// MaxReconnectInterval caps the reconnect backoff (default 10s).
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`
}

// TLSConfig configures TLS towards the broker.
type TLSConfig struct {
	// CAFile is a PEM bundle of CAs to trust (default: the system's).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the server certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate verification off (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLSConfig) enabled() bool { return t != TLSConfig{} }

// DefaultConfig returns the defaults: a local EMQX, the v5 $SYS presence
// topics, and a client id derived from the host name.
func DefaultConfig() Config {
	id := "fleetwatch-ingest"
	if h, err := os.Hostname(); err == nil && h != "" {
		id += "-" + h
	}
	return Config{
		MQTT: MQTTConfig{
			Broker:               "tcp://127.0.0.1:1883",
			ClientID:             id,
			Topics:               append([]string(nil), DefaultTopics...),
			ConnectTimeout:       10 * time.Second,
			KeepAlive:            30 * time.Second,
			MaxReconnectInterval: 10 * time.Second,
		},
		Partitions:     events.DefaultPartitions,
		PublishTimeout: 5 * time.Second,
		MaxInFlight:    256,
	}
}

var brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true}

func tlsScheme(s string) bool { return s == "ssl" || s == "tls" || s == "mqtts" }

// Validate checks the settings without touching the network. Errors name
// the field and say how to fix it; they never contain a secret.
func (c Config) Validate() error {
	if err := c.MQTT.validate(); err != nil {
		return err
	}
	switch {
	case c.Partitions < 1 || c.Partitions > 1<<16:
		return fmt.Errorf("ingest.partitions is %d: use the deployment's partition count (default %d)", c.Partitions, events.DefaultPartitions)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("ingest.publish_timeout is %s: use a positive duration such as 5s", c.PublishTimeout)
	case c.MaxInFlight < 1:
		return fmt.Errorf("ingest.max_in_flight is %d: use a positive number such as 256", c.MaxInFlight)
	}
	return nil
}

func (m MQTTConfig) validate() error {
	if strings.TrimSpace(m.Broker) == "" {
		return errors.New("ingest.mqtt.broker is empty: set it to tcp://host:1883 (or ssl://host:8883)")
	}
	u, err := url.Parse(m.Broker)
	if err != nil || !brokerSchemes[u.Scheme] || u.Hostname() == "" {
		if u != nil && u.User != nil {
			return errors.New("ingest.mqtt.broker must not contain credentials: set ingest.mqtt.username and password_file")
		}
		return fmt.Errorf("ingest.mqtt.broker %q is not a broker URL: use tcp://host:1883 or ssl://host:8883", redactURL(m.Broker))
	}
	if u.User != nil {
		return errors.New("ingest.mqtt.broker must not contain credentials: set ingest.mqtt.username and password_file")
	}
	if u.Port() == "" {
		return fmt.Errorf("ingest.mqtt.broker %q has no port: write %s://%s:1883 (8883 for TLS)", m.Broker, u.Scheme, u.Hostname())
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("ingest.mqtt.broker %q has a path: MQTT over TCP takes only scheme://host:port", m.Broker)
	}
	if m.TLS.enabled() && !tlsScheme(u.Scheme) {
		return fmt.Errorf("ingest.mqtt.tls is set but ingest.mqtt.broker uses %s://: use ssl://%s", u.Scheme, u.Host)
	}
	if strings.TrimSpace(m.ClientID) == "" {
		return errors.New("ingest.mqtt.client_id is empty: set a fixed id per replica, e.g. fleetwatch-ingest-0")
	}
	if m.PasswordFile != "" && m.PasswordEnv != "" {
		return errors.New("ingest.mqtt.password_file and ingest.mqtt.password_env are both set: keep one")
	}
	if (m.PasswordFile != "" || m.PasswordEnv != "") && m.Username == "" {
		return errors.New("ingest.mqtt.password_* is set without ingest.mqtt.username: set the user name too")
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		return errors.New("ingest.mqtt.tls.cert_file and ingest.mqtt.tls.key_file go together: set both or neither")
	}
	if strings.ContainsAny(m.SharedGroup, "/+#") {
		return fmt.Errorf("ingest.mqtt.shared_group %q contains '/', '+' or '#': use a plain name such as fleetwatch-ingest", m.SharedGroup)
	}
	if len(m.Topics) == 0 {
		return fmt.Errorf("ingest.mqtt.topics is empty: list the presence filters, e.g. %s", DefaultTopics[0])
	}
	for _, t := range m.Topics {
		if err := validFilter(t); err != nil {
			return fmt.Errorf("ingest.mqtt.topics: %q %w", t, err)
		}
		if strings.HasPrefix(strings.ToLower(t), "$share/") || strings.HasPrefix(t, "$queue/") {
			return fmt.Errorf("ingest.mqtt.topics: %q is a shared subscription: list the plain filter and set ingest.mqtt.shared_group", t)
		}
	}
	switch {
	case m.ConnectTimeout <= 0:
		return fmt.Errorf("ingest.mqtt.connect_timeout is %s: use a positive duration such as 10s", m.ConnectTimeout)
	case m.KeepAlive < time.Second:
		return fmt.Errorf("ingest.mqtt.keepalive is %s: use at least 1s, e.g. 30s", m.KeepAlive)
	case m.MaxReconnectInterval <= 0:
		return fmt.Errorf("ingest.mqtt.max_reconnect_interval is %s: use a positive duration such as 10s", m.MaxReconnectInterval)
	}
	return nil
}

// validFilter checks MQTT topic filter syntax.
func validFilter(f string) error {
	if f == "" {
		return errors.New("is empty: use a filter such as " + DefaultTopics[0])
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return errors.New("has '#' that is not the whole last level")
		case strings.Contains(l, "+") && l != "+":
			return errors.New("has '+' that is not a whole level")
		}
	}
	return nil
}

// filters returns the subscription filters, with the shared group applied.
func (m MQTTConfig) filters() map[string]byte {
	out := make(map[string]byte, len(m.Topics))
	for _, t := range m.Topics {
		if m.SharedGroup != "" {
			t = "$share/" + m.SharedGroup + "/" + t
		}
		out[t] = 1
	}
	return out
}

// redactURL hides user info, so that a password in a URL never reaches an
// error or a log.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		return s[:i+3] + "***@" + s[at+1:]
	}
	return "***@" + s[at+1:]
}
