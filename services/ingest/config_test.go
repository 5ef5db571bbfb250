package ingest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/ingest"
)

func TestDefaultConfig(t *testing.T) {
	c := ingest.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	if !strings.HasPrefix(c.MQTT.ClientID, "fleetwatch-ingest") || c.Partitions != events.DefaultPartitions ||
		len(c.MQTT.Topics) != 2 || c.MQTT.Broker != "tcp://127.0.0.1:1883" {
		t.Errorf("DefaultConfig() = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*ingest.Config)
		want string
	}{
		{"empty broker", func(c *ingest.Config) { c.MQTT.Broker = " " },
			"ingest.mqtt.broker is empty: set it to tcp://host:1883 (or ssl://host:8883)"},
		{"bad scheme", func(c *ingest.Config) { c.MQTT.Broker = "http://h:1883" },
			`ingest.mqtt.broker "http://h:1883" is not a broker URL: use tcp://host:1883 or ssl://host:8883`},
		{"no scheme", func(c *ingest.Config) { c.MQTT.Broker = "h:1883" },
			`ingest.mqtt.broker "h:1883" is not a broker URL: use tcp://host:1883 or ssl://host:8883`},
		{"credentials in url", func(c *ingest.Config) { c.MQTT.Broker = "tcp://u:secret@h:1883" },
			"ingest.mqtt.broker must not contain credentials: set ingest.mqtt.username and password_file"},
		{"no port", func(c *ingest.Config) { c.MQTT.Broker = "tcp://h" },
			`ingest.mqtt.broker "tcp://h" has no port: write tcp://h:1883 (8883 for TLS)`},
		{"path", func(c *ingest.Config) { c.MQTT.Broker = "tcp://h:1883/mqtt" },
			`ingest.mqtt.broker "tcp://h:1883/mqtt" has a path: MQTT over TCP takes only scheme://host:port`},
		{"tls on tcp", func(c *ingest.Config) { c.MQTT.TLS.CAFile = "ca.pem" },
			"ingest.mqtt.tls is set but ingest.mqtt.broker uses tcp://: use ssl://127.0.0.1:1883"},
		{"empty client id", func(c *ingest.Config) { c.MQTT.ClientID = "" },
			"ingest.mqtt.client_id is empty: set a fixed id per replica, e.g. fleetwatch-ingest-0"},
		{"two password sources", func(c *ingest.Config) {
			c.MQTT.Username, c.MQTT.PasswordFile, c.MQTT.PasswordEnv = "u", "f", "E"
		}, "ingest.mqtt.password_file and ingest.mqtt.password_env are both set: keep one"},
		{"password without user", func(c *ingest.Config) { c.MQTT.PasswordEnv = "E" },
			"ingest.mqtt.password_* is set without ingest.mqtt.username: set the user name too"},
		{"cert without key", func(c *ingest.Config) {
			c.MQTT.Broker, c.MQTT.TLS.CertFile = "ssl://h:8883", "c.pem"
		}, "ingest.mqtt.tls.cert_file and ingest.mqtt.tls.key_file go together: set both or neither"},
		{"bad shared group", func(c *ingest.Config) { c.MQTT.SharedGroup = "a/b" },
			`ingest.mqtt.shared_group "a/b" contains '/', '+' or '#': use a plain name such as fleetwatch-ingest`},
		{"no topics", func(c *ingest.Config) { c.MQTT.Topics = nil },
			"ingest.mqtt.topics is empty: list the presence filters, e.g. $SYS/brokers/+/clients/#"},
		{"empty topic", func(c *ingest.Config) { c.MQTT.Topics = []string{""} },
			`ingest.mqtt.topics: "" is empty: use a filter such as $SYS/brokers/+/clients/#`},
		{"bad hash", func(c *ingest.Config) { c.MQTT.Topics = []string{"$SYS/#/x"} },
			`ingest.mqtt.topics: "$SYS/#/x" has '#' that is not the whole last level`},
		{"bad plus", func(c *ingest.Config) { c.MQTT.Topics = []string{"$SYS/a+/x"} },
			`ingest.mqtt.topics: "$SYS/a+/x" has '+' that is not a whole level`},
		{"shared topic", func(c *ingest.Config) { c.MQTT.Topics = []string{"$share/g/$SYS/#"} },
			`ingest.mqtt.topics: "$share/g/$SYS/#" is a shared subscription: list the plain filter and set ingest.mqtt.shared_group`},
		{"connect timeout", func(c *ingest.Config) { c.MQTT.ConnectTimeout = 0 },
			"ingest.mqtt.connect_timeout is 0s: use a positive duration such as 10s"},
		{"keepalive", func(c *ingest.Config) { c.MQTT.KeepAlive = time.Millisecond },
			"ingest.mqtt.keepalive is 1ms: use at least 1s, e.g. 30s"},
		{"reconnect", func(c *ingest.Config) { c.MQTT.MaxReconnectInterval = -time.Second },
			"ingest.mqtt.max_reconnect_interval is -1s: use a positive duration such as 10s"},
		{"partitions", func(c *ingest.Config) { c.Partitions = 0 },
			"ingest.partitions is 0: use the deployment's partition count (default 64)"},
		{"publish timeout", func(c *ingest.Config) { c.PublishTimeout = 0 },
			"ingest.publish_timeout is 0s: use a positive duration such as 5s"},
		{"in flight", func(c *ingest.Config) { c.MaxInFlight = 0 },
			"ingest.max_in_flight is 0: use a positive number such as 1024"},
		{"no source", func(c *ingest.Config) { c.Sys.Enabled = false },
			"ingest: no source is enabled: enable ingest.sys (the default), ingest.rule, ingest.aws_iot, ingest.last_will, ingest.sparkplug or ingest.webhook"},
		{"rule without topics", func(c *ingest.Config) { c.Rule.Enabled, c.Rule.Topics = true, nil },
			"ingest.rule.topics is empty: list the topics your rules republish to, e.g. fleetwatch/presence/#"},
		{"rule bad topic", func(c *ingest.Config) { c.Rule.Enabled, c.Rule.Topics = true, []string{"a/#/b"} },
			`ingest.rule.topics: "a/#/b" has '#' that is not the whole last level`},
		{"aws shared topic", func(c *ingest.Config) {
			c.AWSIoT.Enabled, c.AWSIoT.Topics = true, []string{"$share/g/$aws/events/presence/+/#"}
		}, `ingest.aws_iot.topics: "$share/g/$aws/events/presence/+/#" is a shared subscription: list the plain filter and set ingest.mqtt.shared_group`},
		{"aws node", func(c *ingest.Config) { c.AWSIoT.Enabled, c.AWSIoT.Node = true, "" },
			"ingest.aws_iot.node is empty: name the AWS IoT endpoint, e.g. aws-iot-eu-west-1"},
		{"last will pattern", func(c *ingest.Config) { c.LastWill.Enabled, c.LastWill.Pattern = true, "devices/+/status" },
			`ingest.last_will.pattern "devices/+/status" has no {device} level: mark the level that holds the device id, e.g. devices/{device}/status`},
		{"health threshold", func(c *ingest.Config) { c.Health.Enabled, c.Health.SilentAfter = true, 0 },
			"ingest.health.silent_after is 0s: use a duration above EMQX's heartbeat interval, e.g. 90s"},
		{"health interval", func(c *ingest.Config) { c.Health.Enabled, c.Health.CheckInterval = true, 0 },
			"ingest.health.check_interval is 0s: use a positive duration such as 5s"},
		{"sparkplug device id", func(c *ingest.Config) { c.Sparkplug.Enabled, c.Sparkplug.DeviceID = true, "clientid" },
			`ingest.sparkplug.device_id is "clientid": use "group/edge" (<group_id>/<edge_node_id>) or "edge" (<edge_node_id>)`},
		{"sparkplug topic", func(c *ingest.Config) { c.Sparkplug.Enabled, c.Sparkplug.Topics = true, []string{"spBv1.0/+/NBIRTH#"} },
			`ingest.sparkplug.topics: "spBv1.0/+/NBIRTH#" has '#' that is not the whole last level`},
		{"health bucket", func(c *ingest.Config) { c.Health.Enabled, c.Health.Bucket = true, "fleetwatch.nodes" },
			`ingest.health.bucket "fleetwatch.nodes" is not a KV bucket name: use letters, digits, '_' and '-', e.g. fleetwatch_ingest_nodes`},
		{"health replicas", func(c *ingest.Config) { c.Health.Enabled, c.Health.Replicas = true, 0 },
			"ingest.health.replicas is 0: use 1 (single server) to 5 (usually 3 in a cluster)"},
		{"health forget", func(c *ingest.Config) { c.Health.Enabled, c.Health.ForgetAfter = true, time.Minute },
			"ingest.health.forget_after is 1m0s: use at least silent_after (1m30s), e.g. 168h"},
		{"webhook listen", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.Listen = true, "8480" },
			`ingest.webhook.listen "8480" is not host:port: use e.g. :8480`},
		{"webhook path", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.Path = true, "hook" },
			`ingest.webhook.path "hook" does not start with '/': use e.g. /emqx/webhook`},
		{"webhook two tokens", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.TokenFile, c.Webhook.TokenEnv = true, "f", "E" },
			"ingest.webhook.token_file and ingest.webhook.token_env are both set: keep one"},
		{"webhook header", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.TokenEnv, c.Webhook.AuthHeader = true, "E", "" },
			"ingest.webhook.auth_header is empty: use Authorization (Bearer token) or a header name such as X-Fleetwatch-Token"},
		{"webhook body", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.MaxBodyBytes = true, 10 },
			"ingest.webhook.max_body_bytes is 10: use 1024..16777216, e.g. 65536"},
		{"webhook timeout", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.AckTimeout = true, 0 },
			"ingest.webhook.ack_timeout is 0s: use a positive duration below EMQX's request timeout, e.g. 10s"},
		{"reconcile url", func(c *ingest.Config) { c.Reconcile.Enabled, c.Reconcile.URL = true, "emqx:18083" },
			`ingest.reconcile.url "emqx:18083" is not an http(s) URL: use the EMQX API listener, e.g. http://emqx:18083`},
		{"reconcile credentials in url", func(c *ingest.Config) { c.Reconcile.Enabled, c.Reconcile.URL = true, "http://k:secret@emqx:18083" },
			"ingest.reconcile.url must not contain credentials: set api_key and api_secret_file"},
		{"reconcile key", func(c *ingest.Config) { c.Reconcile.Enabled, c.Reconcile.URL = true, "http://emqx:18083" },
			"ingest.reconcile.api_key is empty: create an API key in EMQX (System > API Keys)"},
		{"reconcile secret", func(c *ingest.Config) {
			c.Reconcile.Enabled, c.Reconcile.URL, c.Reconcile.APIKey = true, "http://emqx:18083", "k"
		}, "ingest.reconcile: set exactly one of api_secret_file and api_secret_env"},
		{"reconcile page", func(c *ingest.Config) {
			c.Reconcile.Enabled, c.Reconcile.URL, c.Reconcile.APIKey, c.Reconcile.APISecretEnv = true, "http://emqx:18083", "k", "S"
			c.Reconcile.PageLimit = 20000
		}, "ingest.reconcile.page_limit is 20000: use 1..10000, e.g. 1000"},
		{"webhook tls", func(c *ingest.Config) { c.Webhook.Enabled, c.Webhook.CertFile = true, "c.pem" },
			"ingest.webhook.cert_file and ingest.webhook.key_file go together: set both or neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ingest.DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), ":secret@") {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, edit := range []func(*ingest.Config){
		func(c *ingest.Config) { c.MQTT.Broker = "ssl://emqx.example:8883"; c.MQTT.TLS.CAFile = "ca.pem" },
		func(c *ingest.Config) { c.MQTT.Broker = "mqtts://[::1]:8883" },
		func(c *ingest.Config) { c.MQTT.Username, c.MQTT.PasswordFile = "fleetwatch", "/run/secrets/mqtt" },
		func(c *ingest.Config) {
			c.MQTT.SharedGroup = "fleetwatch"
			c.MQTT.Topics = []string{"$SYS/brokers/+/clients/#"}
		},
		// Only the webhook: no MQTT settings are needed.
		func(c *ingest.Config) { c.Sys.Enabled, c.Webhook.Enabled, c.MQTT = false, true, ingest.MQTTConfig{} },
		// Only rule events: the $SYS filters may be empty.
		func(c *ingest.Config) { c.Sys.Enabled, c.Rule.Enabled, c.MQTT.Topics = false, true, nil },
	} {
		c := ingest.DefaultConfig()
		edit(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c.MQTT, err)
		}
	}
}
