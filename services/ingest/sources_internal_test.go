package ingest

import (
	"reflect"
	"testing"
)

func TestTopicMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"$SYS/brokers/+/clients/#", "$SYS/brokers/n/clients/a/b/connected", true},
		{"$SYS/brokers/+/clients/#", "$SYS/brokers/n/uptime", false},
		{"$SYS/brokers/+/uptime", "$SYS/brokers/n/uptime", true},
		{"#", "$SYS/brokers/n/uptime", false},
		{"+/brokers/#", "$SYS/brokers/n", false},
		{"#", "a/b", true},
		{"a/#", "a", true},
		{"a/+", "a", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/", false},
		{"a/+/c", "a//c", true},
		{"$aws/events/presence/+/#", "$aws/events/presence/connected/x/y", true},
	} {
		if got := topicMatches(tc.filter, tc.topic); got != tc.want {
			t.Errorf("topicMatches(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestRoutesAndFilters(t *testing.T) {
	c := DefaultConfig()
	c.Rule.Enabled, c.AWSIoT.Enabled, c.LastWill.Enabled, c.Sparkplug.Enabled, c.Health.Enabled = true, true, true, true, true
	c.MQTT.SharedGroup = "fw"
	routes := c.routes(nil, nil)
	for topic, want := range map[string]string{
		"$SYS/brokers/n/uptime":                "health",
		"$SYS/brokers/n/clients/d/connected":   SourceEMQXSys,
		"$aws/events/presence/connected/d":     SourceAWSIoT,
		"fleetwatch/presence/d":                SourceEMQXRule,
		"devices/d/status":                     SourceLastWill,
		"spBv1.0/g/NBIRTH/e":                   SourceSparkplug,
		"spBv1.0/g/NDEATH/e":                   SourceSparkplug,
		"$SYS/brokers/n/gateway/coap/clients/": SourceEMQXSys,
	} {
		if r := match(routes, topic); r == nil || r.source != want {
			t.Errorf("%s routed to %+v, want %s", topic, r, want)
		}
	}
	if r := match(routes, "other/topic"); r != nil {
		t.Errorf("other/topic routed to %s", r.source)
	}
	want := map[string]byte{
		"$SYS/brokers/+/uptime":                        1, // never shared: every replica hears every heartbeat
		"$share/fw/$SYS/brokers/+/clients/#":           1,
		"$share/fw/$SYS/brokers/+/gateway/+/clients/#": 1,
		"$share/fw/$aws/events/presence/+/#":           1,
		"$share/fw/fleetwatch/presence/#":              1,
		"$share/fw/devices/+/status":                   1,
		"$share/fw/spBv1.0/+/NBIRTH/+":                 1,
		"$share/fw/spBv1.0/+/NDEATH/+":                 1,
	}
	if got := c.filters(); !reflect.DeepEqual(got, want) {
		t.Errorf("filters = %v\nwant %v", got, want)
	}
	if got := heartbeatNode("$SYS/brokers/emqx@n1/uptime"); got != "emqx@n1" {
		t.Errorf("heartbeatNode = %q", got)
	}
}
