// Package events defines fleetwatch's wire contract: the versioned event types
// that flow between the stages (PresenceEvent, AlertEvent, DeliveryEvent,
// DeadLetter), the NATS subject scheme, content-derived message ids, the
// JetStream streams and consumers that carry them, and a reflection-free
// JSON codec for the bulk event, PresenceEvent (AppendPresence,
// DecodePresence, PresenceDecoder), exactly equivalent to encoding/json.
//
// Everything here is schema version 1 (".v1." in every subject). Inside v1 the
// only allowed change is adding an optional field; the golden files under
// testdata/v1 must keep decoding.
package events
