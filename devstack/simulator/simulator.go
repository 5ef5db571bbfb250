package simulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Config describes a simulated fleet.
type Config struct {
	// BrokerURL is the MQTT broker, tcp://host:port.
	BrokerURL string
	// Devices is the fleet size.
	Devices int
	// Sites spreads devices over this many sites (ids site-<x>-dev-<n>).
	Sites int
	// DropInterval is the mean time between random drops across the fleet
	// (0 turns random drops off).
	DropInterval time.Duration
	// MinOffline and MaxOffline bound how long a dropped device stays away.
	MinOffline, MaxOffline time.Duration
	// Seed makes the random choices repeatable.
	Seed uint64
	// Logger receives progress; nil means slog.Default().
	Logger *slog.Logger
}

// Validate checks the fleet settings.
func (c Config) Validate() error {
	switch {
	case c.BrokerURL == "":
		return errors.New("simulator broker url is empty")
	case c.Devices < 0:
		return fmt.Errorf("simulator devices is %d: use 0 or more", c.Devices)
	case c.Sites < 1 || c.Sites > 26:
		return fmt.Errorf("simulator sites is %d: use 1 to 26", c.Sites)
	case c.DropInterval < 0:
		return errors.New("simulator drop interval is negative")
	case c.MinOffline < 0 || c.MaxOffline < c.MinOffline:
		return errors.New("simulator offline bounds: need 0 <= min <= max")
	}
	return nil
}

// Stats counts the fleet by state.
type Stats struct {
	Devices int `json:"devices"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
	Drops   int `json:"drops"`
}

// Simulator runs a fleet of devices.
type Simulator struct {
	cfg     Config
	log     *slog.Logger
	devices []*Device

	mu    sync.Mutex
	rng   *rand.Rand
	away  map[*Device]bool
	drops int
	wg    sync.WaitGroup
}

// New creates the fleet; Run connects it.
func New(cfg Config) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Simulator{cfg: cfg, log: log, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed)), away: map[*Device]bool{}}
	for i := range cfg.Devices {
		id := fmt.Sprintf("site-%c-dev-%04d", 'a'+rune(i%cfg.Sites), i)
		s.devices = append(s.devices, NewDevice(cfg.BrokerURL, id, DeviceOptions{Username: "sim"}))
	}
	return s, nil
}

// Run connects every device, then drops random devices until ctx ends, and
// finally disconnects the fleet.
func (s *Simulator) Run(ctx context.Context) error {
	for i, d := range s.devices {
		if err := d.Connect(); err != nil {
			return err
		}
		if (i+1)%100 == 0 || i+1 == len(s.devices) {
			s.log.Info("devices connected", "connected", i+1, "of", len(s.devices))
		}
	}
	defer s.shutdown()
	if s.cfg.DropInterval == 0 || len(s.devices) == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		s.mu.Lock()
		wait := time.Duration(s.rng.ExpFloat64() * float64(s.cfg.DropInterval))
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		s.mu.Lock()
		d := s.devices[s.rng.IntN(len(s.devices))]
		abrupt := s.rng.IntN(4) != 0
		span := s.cfg.MaxOffline - s.cfg.MinOffline
		away := s.cfg.MinOffline
		if span > 0 {
			away += time.Duration(s.rng.Int64N(int64(span)))
		}
		s.mu.Unlock()
		s.drop(ctx, d, abrupt, away)
	}
}

// Outage drops a fraction of one site's devices (site "" means all sites)
// abruptly for the given time, and returns how many went down.
func (s *Simulator) Outage(ctx context.Context, site string, fraction float64, away time.Duration) int {
	n := 0
	prefix := "site-" + site + "-"
	for _, d := range s.devices {
		if site != "" && (len(d.ID()) < len(prefix) || d.ID()[:len(prefix)] != prefix) {
			continue
		}
		s.mu.Lock()
		pick := s.rng.Float64() < fraction
		s.mu.Unlock()
		if pick && s.drop(ctx, d, true, away) {
			n++
		}
	}
	s.log.Info("outage simulated", "site", site, "devices", n, "for", away)
	return n
}

// drop takes d down now and brings it back after away. It reports false when
// d is already down.
func (s *Simulator) drop(ctx context.Context, d *Device, abrupt bool, away time.Duration) bool {
	s.mu.Lock()
	if s.away[d] {
		s.mu.Unlock()
		return false
	}
	s.away[d] = true
	s.drops++
	s.mu.Unlock()
	if abrupt {
		_ = d.Kill()
	} else {
		d.Disconnect()
	}
	s.log.Debug("device dropped", "device", d.ID(), "abrupt", abrupt, "for", away)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-time.After(away):
		}
		if ctx.Err() == nil {
			if err := d.Connect(); err != nil {
				s.log.Warn("device reconnect", "device", d.ID(), "err", err)
			}
		}
		s.mu.Lock()
		delete(s.away, d)
		s.mu.Unlock()
	}()
	return true
}

// Stats counts the fleet.
func (s *Simulator) Stats() Stats {
	st := Stats{Devices: len(s.devices)}
	for _, d := range s.devices {
		if d.Connected() {
			st.Online++
		}
	}
	st.Offline = st.Devices - st.Online
	s.mu.Lock()
	st.Drops = s.drops
	s.mu.Unlock()
	return st
}

func (s *Simulator) shutdown() {
	s.wg.Wait()
	for _, d := range s.devices {
		if d.Connected() {
			d.Disconnect()
		}
	}
}
