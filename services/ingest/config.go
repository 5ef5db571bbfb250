package ingest

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest/lastwill"
	"github.com/fleetwatch/fleetwatch/services/ingest/sparkplug"
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

// Config is the ingest stage's section of the config file. Sources are
// enabled independently; several may run at once (all MQTT sources share
// one connection, in which a topic belongs to the first source, in the
// order health, sys, aws_iot, rule, last_will, sparkplug, whose filters
// match it).
type Config struct {
	// MQTT says how to reach the broker. Its Topics are the $SYS source's
	// filters.
	MQTT MQTTConfig `yaml:"mqtt"`
	// Sys is EMQX's $SYS presence (v4 and v5/6, gateway clients included),
	// on by default.
	Sys SysConfig `yaml:"sys"`
	// Rule is EMQX rule-engine $events output republished to MQTT topics.
	Rule RuleConfig `yaml:"rule"`
	// AWSIoT is AWS IoT Core lifecycle events on the MQTT connection.
	AWSIoT AWSIoTConfig `yaml:"aws_iot"`
	// LastWill is the Last-Will/birth status convention.
	LastWill lastwill.Config `yaml:"last_will"`
	// Sparkplug is Sparkplug B edge nodes' NBIRTH / NDEATH.
	Sparkplug sparkplug.Config `yaml:"sparkplug"`
	// Webhook is the HTTP endpoint for EMQX web hooks / HTTP actions.
	Webhook WebhookConfig `yaml:"webhook"`
	// Health tracks EMQX nodes by their $SYS heartbeat.
	Health HealthConfig `yaml:"health"`
	// Reconcile compares the EMQX v5 REST API's clients with the stored
	// events and emits corrective events.
	Reconcile ReconcileConfig `yaml:"reconcile"`
	// Partitions is the deployment's presence partition count (default
	// events.DefaultPartitions). Every stage of a deployment uses the same.
	Partitions int `yaml:"partitions"`
	// PublishTimeout bounds one JetStream publish attempt (default 5s).
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// MaxInFlight bounds the inputs received and not yet acknowledged:
	// MQTT messages between receipt and PUBACK (publishes to JetStream run
	// asynchronously within it), webhook requests being stored (default
	// 1024). At the bound, paho's delivery waits and TCP pushes back to the
	// broker, which keeps the messages in the session. Keep it at or above
	// the broker's inflight window for the ingest session (EMQX
	// mqtt.max_inflight).
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

// SysConfig enables the $SYS source (filters: MQTTConfig.Topics).
type SysConfig struct {
	Enabled bool `yaml:"enabled"`
}

// RuleConfig is the rule-engine source: EMQX rules on
// "$events/client_connected", "$events/client_disconnected" whose republish
// action (payload template ${.}) publishes to Topics.
type RuleConfig struct {
	Enabled bool `yaml:"enabled"`
	// Topics are the filters the rules republish to (default
	// DefaultRuleTopics).
	Topics []string `yaml:"topics"`
}

// DefaultRuleTopics is where docs/ingest-sources.md tells rules to republish.
var DefaultRuleTopics = []string{"fleetwatch/presence/#"}

// AWSIoTConfig is the AWS IoT Core lifecycle source.
type AWSIoTConfig struct {
	Enabled bool `yaml:"enabled"`
	// Topics default to $aws/events/presence/+/# (client ids may hold "/").
	Topics []string `yaml:"topics"`
	// Node names the AWS IoT endpoint in the events (default aws-iot).
	Node string `yaml:"node"`
}

// DefaultAWSIoTTopics are the lifecycle presence filters.
var DefaultAWSIoTTopics = []string{"$aws/events/presence/+/#"}

// WebhookConfig is the HTTP endpoint for EMQX: the v4 web_hook plugin and
// v5 HTTP actions. A request is answered 200 only after JetStream stored
// the event, so EMQX retries otherwise.
type WebhookConfig struct {
	Enabled bool `yaml:"enabled"`
	// Listen is the address (default 127.0.0.1:8480; :8480 in a container).
	Listen string `yaml:"listen"`
	// Path is the URL path EMQX posts to (default /emqx/webhook).
	Path string `yaml:"path"`
	// TokenFile / TokenEnv hold the shared secret; when set, every request
	// must carry it in AuthHeader.
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// AuthHeader carries the secret (default Authorization, as
	// "Bearer <token>"; any other header carries the bare token).
	AuthHeader string `yaml:"auth_header"`
	// MaxBodyBytes bounds a body (default 65536).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// AckTimeout bounds the wait for JetStream before answering 503
	// (default 10s; keep it below EMQX's request_timeout).
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// CertFile / KeyFile serve HTTPS.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// HealthConfig tracks EMQX nodes: each node heard from (a heartbeat on
// Topics or any EMQX event) that then stays silent past SilentAfter is
// reported as silent, and as back when it is heard again.
type HealthConfig struct {
	Enabled bool `yaml:"enabled"`
	// Topics are the heartbeat filters (default $SYS/brokers/+/uptime).
	Topics []string `yaml:"topics"`
	// SilentAfter is the silence that makes a node silent (default 90s:
	// three of EMQX's 30 s heartbeats).
	SilentAfter time.Duration `yaml:"silent_after"`
	// CheckInterval is how often silence is checked (default 5s).
	CheckInterval time.Duration `yaml:"check_interval"`
	// Bucket is the JetStream KV bucket where ingest records the nodes it
	// has heard (default fleetwatch_ingest_nodes), so that a node already
	// down when ingest starts is reported silent too: each recorded node
	// not heard within SilentAfter from the start is. "" records nothing:
	// only nodes heard since the start are watched.
	Bucket string `yaml:"bucket"`
	// Replicas of the bucket (default 1; 3 in a production cluster).
	Replicas int `yaml:"replicas"`
	// ForgetAfter drops a node silent that long from the bucket (default
	// 168h): a decommissioned node stops being tracked.
	ForgetAfter time.Duration `yaml:"forget_after"`
}

// DefaultNodesBucket is the default HealthConfig.Bucket.
const DefaultNodesBucket = "fleetwatch_ingest_nodes"

// ReconcileConfig is the periodic reconciliation against EMQX's REST API
// (GET /api/v5/clients, paged). It also runs when a silent node is back.
type ReconcileConfig struct {
	Enabled bool `yaml:"enabled"`
	// URL is the EMQX dashboard/API listener, e.g. http://emqx:18083.
	URL string `yaml:"url"`
	// APIKey and the secret (APISecretFile or APISecretEnv) are an EMQX
	// API key (basic auth).
	APIKey        string `yaml:"api_key"`
	APISecretFile string `yaml:"api_secret_file"`
	APISecretEnv  string `yaml:"api_secret_env"`
	// Interval between passes (default 5m).
	Interval time.Duration `yaml:"interval"`
	// PageLimit is the page size (default 1000, EMQX allows up to 10000).
	PageLimit int `yaml:"page_limit"`
	// Timeout bounds one API request (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxTracked bounds the devices this replica remembers as connected,
	// the candidates for "the broker forgot it" (default 1000000).
	MaxTracked int `yaml:"max_tracked"`
}

func (r ReconcileConfig) validate() error {
	u, err := url.Parse(r.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("ingest.reconcile.url %q is not an http(s) URL: use the EMQX API listener, e.g. http://emqx:18083", redactURL(r.URL))
	case u.User != nil:
		return errors.New("ingest.reconcile.url must not contain credentials: set api_key and api_secret_file")
	case r.APIKey == "":
		return errors.New("ingest.reconcile.api_key is empty: create an API key in EMQX (System > API Keys)")
	case (r.APISecretFile == "") == (r.APISecretEnv == ""):
		return errors.New("ingest.reconcile: set exactly one of api_secret_file and api_secret_env")
	case r.Interval < time.Second:
		return fmt.Errorf("ingest.reconcile.interval is %s: use at least 1s, e.g. 5m", r.Interval)
	case r.PageLimit < 1 || r.PageLimit > 10000:
		return fmt.Errorf("ingest.reconcile.page_limit is %d: use 1..10000, e.g. 1000", r.PageLimit)
	case r.Timeout <= 0:
		return fmt.Errorf("ingest.reconcile.timeout is %s: use a positive duration such as 30s", r.Timeout)
	case r.MaxTracked < 0:
		return fmt.Errorf("ingest.reconcile.max_tracked is %d: use 0 (no absence check) or a bound such as 1000000", r.MaxTracked)
	}
	return nil
}

// DefaultHealthTopics are EMQX's heartbeat topics.
var DefaultHealthTopics = []string{"$SYS/brokers/+/uptime"}

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
		Sys:       SysConfig{Enabled: true},
		Rule:      RuleConfig{Topics: append([]string(nil), DefaultRuleTopics...)},
		AWSIoT:    AWSIoTConfig{Topics: append([]string(nil), DefaultAWSIoTTopics...), Node: "aws-iot"},
		LastWill:  lastwill.DefaultConfig(),
		Sparkplug: sparkplug.DefaultConfig(),
		Webhook: WebhookConfig{
			Listen:       "127.0.0.1:8480",
			Path:         "/emqx/webhook",
			AuthHeader:   "Authorization",
			MaxBodyBytes: 64 << 10,
			AckTimeout:   10 * time.Second,
		},
		Health: HealthConfig{
			Topics:        append([]string(nil), DefaultHealthTopics...),
			SilentAfter:   90 * time.Second,
			CheckInterval: 5 * time.Second,
			Bucket:        DefaultNodesBucket,
			Replicas:      1,
			ForgetAfter:   7 * 24 * time.Hour,
		},
		Reconcile: ReconcileConfig{
			Interval:   5 * time.Minute,
			PageLimit:  1000,
			Timeout:    30 * time.Second,
			MaxTracked: 1000000,
		},
		Partitions:     events.DefaultPartitions,
		PublishTimeout: 5 * time.Second,
		MaxInFlight:    1024,
	}
}

// usesMQTT reports whether any enabled source needs the MQTT connection.
func (c Config) usesMQTT() bool {
	return c.Sys.Enabled || c.Rule.Enabled || c.AWSIoT.Enabled || c.LastWill.Enabled || c.Sparkplug.Enabled || c.Health.Enabled
}

var brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true}

func tlsScheme(s string) bool { return s == "ssl" || s == "tls" || s == "mqtts" }

// Validate checks the settings without touching the network. Errors name
// the field and say how to fix it; they never contain a secret.
func (c Config) Validate() error {
	if !c.usesMQTT() && !c.Webhook.Enabled {
		return errors.New("ingest: no source is enabled: enable ingest.sys (the default), ingest.rule, ingest.aws_iot, ingest.last_will, ingest.sparkplug or ingest.webhook")
	}
	if c.usesMQTT() {
		if err := c.MQTT.validate(c.Sys.Enabled); err != nil {
			return err
		}
	}
	if err := c.validateSources(); err != nil {
		return err
	}
	switch {
	case c.Partitions < 1 || c.Partitions > 1<<16:
		return fmt.Errorf("ingest.partitions is %d: use the deployment's partition count (default %d)", c.Partitions, events.DefaultPartitions)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("ingest.publish_timeout is %s: use a positive duration such as 5s", c.PublishTimeout)
	case c.MaxInFlight < 1:
		return fmt.Errorf("ingest.max_in_flight is %d: use a positive number such as 1024", c.MaxInFlight)
	}
	return nil
}

func (m MQTTConfig) validate(sys bool) error {
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
	if sys && len(m.Topics) == 0 {
		return fmt.Errorf("ingest.mqtt.topics is empty: list the presence filters, e.g. %s", DefaultTopics[0])
	}
	if err := validFilters("ingest.mqtt.topics", m.Topics); err != nil {
		return err
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

func (c Config) validateSources() error {
	if c.Rule.Enabled {
		if len(c.Rule.Topics) == 0 {
			return fmt.Errorf("ingest.rule.topics is empty: list the topics your rules republish to, e.g. %s", DefaultRuleTopics[0])
		}
		if err := validFilters("ingest.rule.topics", c.Rule.Topics); err != nil {
			return err
		}
	}
	if c.AWSIoT.Enabled {
		if len(c.AWSIoT.Topics) == 0 {
			return fmt.Errorf("ingest.aws_iot.topics is empty: use %s", DefaultAWSIoTTopics[0])
		}
		if err := validFilters("ingest.aws_iot.topics", c.AWSIoT.Topics); err != nil {
			return err
		}
		if strings.TrimSpace(c.AWSIoT.Node) == "" {
			return errors.New("ingest.aws_iot.node is empty: name the AWS IoT endpoint, e.g. aws-iot-eu-west-1")
		}
	}
	if c.LastWill.Enabled {
		if err := c.LastWill.Validate("ingest.last_will"); err != nil {
			return err
		}
	}
	if c.Sparkplug.Enabled {
		if err := c.Sparkplug.Validate("ingest.sparkplug"); err != nil {
			return err
		}
		if err := validFilters("ingest.sparkplug.topics", c.Sparkplug.Topics); err != nil {
			return err
		}
	}
	if c.Health.Enabled {
		if len(c.Health.Topics) == 0 {
			return fmt.Errorf("ingest.health.topics is empty: use %s", DefaultHealthTopics[0])
		}
		if err := validFilters("ingest.health.topics", c.Health.Topics); err != nil {
			return err
		}
		switch {
		case c.Health.SilentAfter <= 0:
			return fmt.Errorf("ingest.health.silent_after is %s: use a duration above EMQX's heartbeat interval, e.g. 90s", c.Health.SilentAfter)
		case c.Health.CheckInterval <= 0:
			return fmt.Errorf("ingest.health.check_interval is %s: use a positive duration such as 5s", c.Health.CheckInterval)
		case c.Health.Bucket != "" && !validBucket(c.Health.Bucket):
			return fmt.Errorf("ingest.health.bucket %q is not a KV bucket name: use letters, digits, '_' and '-', e.g. %s", c.Health.Bucket, DefaultNodesBucket)
		case c.Health.Bucket != "" && (c.Health.Replicas < 1 || c.Health.Replicas > 5):
			return fmt.Errorf("ingest.health.replicas is %d: use 1 (single server) to 5 (usually 3 in a cluster)", c.Health.Replicas)
		case c.Health.Bucket != "" && c.Health.ForgetAfter < c.Health.SilentAfter:
			return fmt.Errorf("ingest.health.forget_after is %s: use at least silent_after (%s), e.g. 168h", c.Health.ForgetAfter, c.Health.SilentAfter)
		}
	}
	if c.Webhook.Enabled {
		if err := c.Webhook.validate(); err != nil {
			return err
		}
	}
	if c.Reconcile.Enabled {
		if err := c.Reconcile.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (w WebhookConfig) validate() error {
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		return fmt.Errorf("ingest.webhook.listen %q is not host:port: use e.g. :8480", w.Listen)
	}
	switch {
	case !strings.HasPrefix(w.Path, "/"):
		return fmt.Errorf("ingest.webhook.path %q does not start with '/': use e.g. /emqx/webhook", w.Path)
	case w.TokenFile != "" && w.TokenEnv != "":
		return errors.New("ingest.webhook.token_file and ingest.webhook.token_env are both set: keep one")
	case (w.TokenFile != "" || w.TokenEnv != "") && strings.TrimSpace(w.AuthHeader) == "":
		return errors.New("ingest.webhook.auth_header is empty: use Authorization (Bearer token) or a header name such as X-Fleetwatch-Token")
	case w.MaxBodyBytes < 1024 || w.MaxBodyBytes > 16<<20:
		return fmt.Errorf("ingest.webhook.max_body_bytes is %d: use 1024..16777216, e.g. 65536", w.MaxBodyBytes)
	case w.AckTimeout <= 0:
		return fmt.Errorf("ingest.webhook.ack_timeout is %s: use a positive duration below EMQX's request timeout, e.g. 10s", w.AckTimeout)
	case (w.CertFile == "") != (w.KeyFile == ""):
		return errors.New("ingest.webhook.cert_file and ingest.webhook.key_file go together: set both or neither")
	}
	return nil
}

// validBucket reports whether name is a valid JetStream KV bucket name.
func validBucket(name string) bool {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return name != ""
}

func validFilters(key string, filters []string) error {
	for _, t := range filters {
		if err := validFilter(t); err != nil {
			return fmt.Errorf("%s: %q %w", key, t, err)
		}
		if strings.HasPrefix(strings.ToLower(t), "$share/") || strings.HasPrefix(t, "$queue/") {
			return fmt.Errorf("%s: %q is a shared subscription: list the plain filter and set ingest.mqtt.shared_group", key, t)
		}
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

// filters returns the subscription filters of every enabled MQTT source,
// with the shared group applied.
func (c Config) filters() map[string]byte {
	out := map[string]byte{}
	for _, r := range c.routes(nil, nil) {
		for _, t := range r.filters {
			if c.MQTT.SharedGroup != "" && r.shared {
				t = "$share/" + c.MQTT.SharedGroup + "/" + t
			}
			out[t] = 1
		}
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
