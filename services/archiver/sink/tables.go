package sink

import (
	"sort"
	"time"

	"github.com/fleetwatch/fleetwatch/pkg/events"
	"github.com/fleetwatch/fleetwatch/services/archiver/schema"
)

type (
	presence = events.PresenceEvent
	alert    = events.AlertEvent
	delivery = events.DeliveryEvent
)

// NewPresenceRows returns empty rows for the presence_events table.
func NewPresenceRows() *Rows[events.PresenceEvent] {
	return newRows(schema.TablePresence,
		func(e *presence) error { return checkTime("broker_ts_ms", e.BrokerTSMS) },
		col("id", func(e *presence) string { return e.ID }),
		col("device_id", func(e *presence) string { return e.DeviceID }),
		col("kind", func(e *presence) string { return string(e.Kind) }),
		col("reason", func(e *presence) string { return string(e.Reason) }),
		col("raw_reason", func(e *presence) string { return e.RawReason }),
		col("node", func(e *presence) string { return e.Node }),
		col("broker_ts", func(e *presence) time.Time { return utc(e.BrokerTSMS) }),
		col("broker_ts_ms", func(e *presence) uint64 { return u64(e.BrokerTSMS) }),
		col("connected_at_ms", func(e *presence) uint64 { return u64(e.ConnectedAtMS) }),
		col("conn_version", func(e *presence) int64 { return e.ConnVersion }),
		col("ip", func(e *presence) string { return e.IP }),
		col("username", func(e *presence) string { return e.Username }),
		col("protocol", func(e *presence) string { return e.Protocol }),
		col("proto_ver", func(e *presence) uint8 { return u8(e.ProtoVer) }),
		col("keepalive_s", func(e *presence) uint32 { return u32(e.KeepaliveS) }),
		col("source", func(e *presence) string { return e.Source }),
		col("received_at_ms", func(e *presence) uint64 { return u64(e.ReceivedAtMS) }),
		col("date", func(e *presence) time.Time { return utc(e.BrokerTSMS) }),
	)
}

// NewAlertRows returns empty rows for the alerts table. Group labels are
// stored as two arrays sorted by key; device_ids lists the devices carried
// by the event (at most events.MaxAlertDevices), devices_total counts all;
// new_total … tier and silence_ids … inhibited_by are the optional fields
// (zero, empty string or empty array when absent; migration 5 added their columns).
func NewAlertRows() *Rows[events.AlertEvent] {
	return newRows(schema.TableAlerts,
		func(a *alert) error { return checkTime("starts_at_ms", a.StartsAtMS) },
		col("id", func(a *alert) string { return a.ID }),
		col("fingerprint", func(a *alert) string { return a.Fingerprint }),
		col("receiver", func(a *alert) string { return a.Receiver }),
		col("status", func(a *alert) string { return string(a.Status) }),
		col("kind", func(a *alert) string { return string(a.Kind) }),
		col("severity", func(a *alert) string { return string(a.Severity) }),
		col("group_key", func(a *alert) string { return a.GroupKey }),
		col("group_label_keys", func(a *alert) []string { return sortedKeys(a.GroupLabels) }),
		col("group_label_values", func(a *alert) []string { return valuesOf(a.GroupLabels, sortedKeys(a.GroupLabels)) }),
		col("device_ids", func(a *alert) []string { return deviceIDs(a.Devices) }),
		col("devices_total", func(a *alert) uint32 { return u32(a.DevicesTotal) }),
		col("new_total", func(a *alert) uint32 { return u32(a.NewTotal) }),
		col("resolved_total", func(a *alert) uint32 { return u32(a.ResolvedTotal) }),
		col("firing_total", func(a *alert) uint32 { return u32(a.FiringTotal) }),
		col("known_total", func(a *alert) uint32 { return u32(a.KnownTotal) }),
		col("flap_count", func(a *alert) uint32 { return u32(a.FlapCount) }),
		col("tier", func(a *alert) uint16 { return u16(a.Tier) }),
		col("starts_at_ms", func(a *alert) uint64 { return u64(a.StartsAtMS) }),
		col("ends_at_ms", func(a *alert) uint64 { return u64(a.EndsAtMS) }),
		col("created_at_ms", func(a *alert) uint64 { return u64(a.CreatedAtMS) }),
		col("silenced", func(a *alert) uint8 { return boolU8(a.Silenced) }),
		col("silence_ids", func(a *alert) []string { return nonNil(a.SilenceIDs) }),
		col("inhibited", func(a *alert) uint8 { return boolU8(a.Inhibited) }),
		col("inhibited_by", func(a *alert) string { return a.InhibitedBy }),
		col("date", func(a *alert) time.Time { return utc(a.StartsAtMS) }),
	)
}

// NewDeliveryRows returns empty rows for the deliveries table.
func NewDeliveryRows() *Rows[events.DeliveryEvent] {
	return newRows(schema.TableDeliveries,
		func(d *delivery) error { return checkTime("at_ms", d.AtMS) },
		col("id", func(d *delivery) string { return d.ID }),
		col("alert_id", func(d *delivery) string { return d.AlertID }),
		col("fingerprint", func(d *delivery) string { return d.Fingerprint }),
		col("alert_status", func(d *delivery) string { return string(d.AlertStatus) }),
		col("receiver", func(d *delivery) string { return d.Receiver }),
		col("channel", func(d *delivery) string { return d.Channel }),
		col("attempt", func(d *delivery) uint32 { return u32(d.Attempt) }),
		col("outcome", func(d *delivery) string { return string(d.Outcome) }),
		col("http_status", func(d *delivery) uint16 { return u16(d.HTTPStatus) }),
		col("remote_code", func(d *delivery) string { return d.RemoteCode }),
		col("remote_message", func(d *delivery) string { return d.RemoteMessage }),
		col("hint", func(d *delivery) string { return d.Hint }),
		col("bytes", func(d *delivery) uint32 { return u32(d.Bytes) }),
		col("latency_ms", func(d *delivery) uint64 { return u64(d.LatencyMS) }),
		col("at_ms", func(d *delivery) uint64 { return u64(d.AtMS) }),
		col("date", func(d *delivery) time.Time { return utc(d.AtMS) }),
	)
}

// nonNil returns s, or an empty slice for nil (an Array column takes no nil).
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return []string{}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func valuesOf(m map[string]string, keys []string) []string {
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = m[k]
	}
	return vals
}

func deviceIDs(ds []events.AlertDevice) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.DeviceID
	}
	return ids
}
