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
// them, go through encoding/json. A non-nil pd decodes presence events
// (a borrowing decoder makes their strings point into data, which must
// then outlive the event).
func decode[E event](pd *events.PresenceDecoder, data []byte) (E, error) {
	var e E
	var err error
	if p, ok := any(&e).(*events.PresenceEvent); ok {
		if pd != nil {
			err = pd.Decode(data, p)
		} else {
			err = events.DecodePresence(data, p)
		}
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
