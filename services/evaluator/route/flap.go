package route

import (
	"fmt"
	"time"
)

// Flap suppression defaults, after BGP route flap damping (RFC 2439) scaled
// to MQTT devices. Each real disconnect adds 1000; the penalty halves every
// 5 minutes. A device is suppressed (flapping) above 3000, which takes a
// fourth disconnect within a few minutes (three back to back reach 2990:
// the decay of even one second keeps them under), and reusable again below
// 750: two half-lives (10 minutes) of calm after the suppression began. The
// ceiling of 12000 (16 times the reuse limit) bounds the calm-down after a
// long storm to four half-lives, 20 minutes.
const (
	DefaultFlapPenalty    = 1000
	DefaultFlapHalfLife   = 5 * time.Minute
	DefaultFlapSuppress   = 3000
	DefaultFlapReuse      = 750
	DefaultFlapMaxPenalty = 12000
)

// FlapConfig turns on flap suppression for a route and its children, as
// written in the config file. Unset fields take the defaults above; a
// child's flap block replaces its parent's; {disabled: true} turns an
// inherited one off.
type FlapConfig struct {
	// Disabled turns flap suppression off for the route.
	Disabled bool `yaml:"disabled"`
	// Penalty is added on each real disconnect (takeovers do not count).
	Penalty int `yaml:"penalty"`
	// HalfLife is the time in which the penalty halves.
	HalfLife time.Duration `yaml:"half_life"`
	// Suppress is the penalty at which a device is flapping: one
	// device_flapping alert, its own offline/online alerts held.
	Suppress int `yaml:"suppress"`
	// Reuse is the penalty under which a flapping device is stable again.
	Reuse int `yaml:"reuse"`
	// MaxPenalty caps the penalty, so that a device calms down at most
	// half_life × log2(max_penalty/reuse) after its last disconnect.
	MaxPenalty int `yaml:"max_penalty"`
}

// Flap is compiled flap suppression settings.
type Flap struct {
	Penalty, Suppress, Reuse, MaxPenalty uint32
	HalfLife                             time.Duration
}

// compileFlap validates c (nil: inherit) under field.
func compileFlap(c *FlapConfig, inherited *Flap, field string) (*Flap, error) {
	if c == nil {
		return inherited, nil
	}
	if c.Disabled {
		if c.Penalty != 0 || c.HalfLife != 0 || c.Suppress != 0 || c.Reuse != 0 || c.MaxPenalty != 0 {
			return nil, fmt.Errorf("%s.disabled is set with other settings: remove them or disabled", field)
		}
		return nil, nil
	}
	f := Flap{Penalty: DefaultFlapPenalty, HalfLife: DefaultFlapHalfLife, Suppress: DefaultFlapSuppress,
		Reuse: DefaultFlapReuse, MaxPenalty: DefaultFlapMaxPenalty}
	const limit = 1 << 30
	for _, v := range []struct {
		name string
		v    int
		dst  *uint32
	}{{"penalty", c.Penalty, &f.Penalty}, {"suppress", c.Suppress, &f.Suppress}, {"reuse", c.Reuse, &f.Reuse}, {"max_penalty", c.MaxPenalty, &f.MaxPenalty}} {
		switch {
		case v.v < 0 || v.v > limit:
			return nil, fmt.Errorf("%s.%s is %d: use 1 to %d (or leave it out for the default)", field, v.name, v.v, limit)
		case v.v > 0:
			*v.dst = uint32(v.v)
		}
	}
	if c.HalfLife != 0 {
		if c.HalfLife < time.Second || c.HalfLife > 24*time.Hour {
			return nil, fmt.Errorf("%s.half_life is %s: use 1s to 24h, e.g. 5m", field, c.HalfLife)
		}
		f.HalfLife = c.HalfLife
	}
	switch {
	case f.Reuse >= f.Suppress:
		return nil, fmt.Errorf("%s: reuse %d is not below suppress %d: lower reuse or raise suppress", field, f.Reuse, f.Suppress)
	case f.Suppress > f.MaxPenalty:
		return nil, fmt.Errorf("%s: suppress %d is above max_penalty %d: a device could never be suppressed, raise max_penalty", field, f.Suppress, f.MaxPenalty)
	case f.Penalty > f.MaxPenalty:
		return nil, fmt.Errorf("%s: penalty %d is above max_penalty %d: lower penalty or raise max_penalty", field, f.Penalty, f.MaxPenalty)
	}
	return &f, nil
}
