package evaluator

import (
	"fmt"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// decodePresence parses and validates a message of the PRESENCE stream. The
// subject must be the one the event's device maps to with this deployment's
// partition count.
func decodePresence(subject string, data []byte, partitions int) (events.PresenceEvent, error) {
	var e events.PresenceEvent
	if err := events.DecodePresence(data, &e); err != nil {
		return events.PresenceEvent{}, fmt.Errorf("decode presence event: %w", err)
	}
	if err := e.Validate(); err != nil {
		return events.PresenceEvent{}, err
	}
	if want := e.Subject(partitions); subject != want {
		return events.PresenceEvent{}, fmt.Errorf("subject %q does not match device_id %q: want %q (evaluator.partitions is %d and must equal the ingest's)",
			subject, e.DeviceID, want, partitions)
	}
	return e, nil
}
