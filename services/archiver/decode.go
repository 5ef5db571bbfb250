package archiver

import (
	"encoding/json"
	"fmt"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// decode parses and validates one message payload. Unknown JSON fields are
// accepted: v1 may gain optional fields that this archiver does not store.
//
// Presence events, the bulk of the archive, go through
// events.DecodePresence: several times faster than encoding/json, with
// exactly its results and errors. Alerts and deliveries, a trickle beside
// them, go through encoding/json.
func decode[E event](data []byte) (E, error) {
	var e E
	var err error
	if p, ok := any(&e).(*events.PresenceEvent); ok {
		err = events.DecodePresence(data, p)
	} else {
		err = json.Unmarshal(data, &e)
	}
	if err != nil {
		return e, fmt.Errorf("decode json: %w", err)
	}
	if err := e.Validate(); err != nil {
		return e, err
	}
	return e, nil
}
