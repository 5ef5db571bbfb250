// Package silence is the evaluator's silences and maintenance windows: label
// matchers plus a time range. A silenced alert is still decided and recorded
// (in ALERTS, with Silenced set and the silence ids) but the notifier does
// not deliver it.
//
// The type is shared by the pure tracker (which applies the active set as an
// input) and by the service (which stores silences in a NATS KV bucket and
// serves them over the HTTP API).
package silence

import (
	"errors"
	"fmt"
	"time"

	"github.com/fleetwatch/fleetwatch/services/evaluator/route"
)

// Silence mutes the alerts whose device labels match all its matchers,
// between StartsAt (inclusive) and EndsAt (exclusive).
type Silence struct {
	// ID names the silence; it is the KV key.
	ID string `json:"id"`
	// Matchers are label matchers in the route syntax: site="sh-01",
	// device_id=~"dev-1.*", criticality!="high".
	Matchers []string `json:"matchers"`
	// StartsAt and EndsAt bound the silence.
	StartsAt time.Time `json:"starts_at"`
	EndsAt   time.Time `json:"ends_at"`
	// Comment says why; CreatedBy says who.
	Comment   string `json:"comment,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
	// ExpireWhenResolved ends the silence once every device it matched
	// has recovered (a maintenance that finished early).
	ExpireWhenResolved bool `json:"expire_when_resolved,omitempty"`

	matchers route.Matchers
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid silence")

// Compile validates s and compiles its matchers; it must be called before
// Matches.
func (s *Silence) Compile() error {
	switch {
	case s.ID == "":
		return fmt.Errorf("%w: id is empty", ErrInvalid)
	case len(s.Matchers) == 0:
		return fmt.Errorf("%w: matchers is empty: a silence needs at least one matcher, e.g. site=\"sh-01\"", ErrInvalid)
	case s.StartsAt.IsZero() || s.EndsAt.IsZero():
		return fmt.Errorf("%w: starts_at and ends_at are required (RFC 3339 times)", ErrInvalid)
	case !s.EndsAt.After(s.StartsAt):
		return fmt.Errorf("%w: ends_at %s is not after starts_at %s", ErrInvalid, s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339))
	}
	ms, err := route.ParseMatchers(s.Matchers)
	if err != nil {
		return fmt.Errorf("%w: matchers: %w", ErrInvalid, err)
	}
	s.matchers = ms
	return nil
}

// ActiveAt reports whether s is in force at t.
func (s *Silence) ActiveAt(t time.Time) bool {
	return !t.Before(s.StartsAt) && t.Before(s.EndsAt)
}

// Matches reports whether labels (get returns "" for a missing label)
// match every matcher. s must be compiled.
func (s *Silence) Matches(get func(name string) string) bool {
	return len(s.matchers) > 0 && s.matchers.Matches(get)
}
