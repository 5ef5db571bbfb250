package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Store keeps one Log per key (a receiver). Every notifier replica that
// uses the same Store shares the receiver's budget and its pauses.
type Store interface {
	// Load returns the key's log, pruned for ws at now.
	Load(ctx context.Context, key string, ws []Window, now time.Time) (Log, error)
	// Reserve records a send at now and returns the time recorded (now,
	// or later: see Log.Add) and a zero wait when the pause is over and
	// every window has room; otherwise it records nothing and returns the
	// wait.
	Reserve(ctx context.Context, key string, ws []Window, now time.Time) (at time.Time, wait time.Duration, err error)
	// Settle moves the send recorded at reserved (the time Reserve
	// returned) to done, the end of its request (see Log.Settle).
	Settle(ctx context.Context, key string, reserved, done time.Time) error
	// Pause holds the key's sends until until (a longer pause wins).
	Pause(ctx context.Context, key string, until time.Time, why string) error
}

// Memory is a Store for one process.
type Memory struct {
	mu   sync.Mutex
	logs map[string]*Log
}

// NewMemory returns an empty in-process Store.
func NewMemory() *Memory { return &Memory{logs: map[string]*Log{}} }

func (m *Memory) log(key string) *Log {
	l := m.logs[key]
	if l == nil {
		l = &Log{}
		m.logs[key] = l
	}
	return l
}

// Load implements Store.
func (m *Memory) Load(_ context.Context, key string, ws []Window, now time.Time) (Log, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.log(key)
	l.Prune(ws, now)
	return Log{Sends: append([]int64(nil), l.Sends...), PausedUntil: l.PausedUntil, PauseReason: l.PauseReason}, nil
}

// Reserve implements Store.
func (m *Memory) Reserve(_ context.Context, key string, ws []Window, now time.Time) (time.Time, time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.log(key)
	l.Prune(ws, now)
	if w := l.Wait(ws, now); w > 0 {
		return time.Time{}, w, nil
	}
	return l.Add(ws, now), 0, nil
}

// Settle implements Store.
func (m *Memory) Settle(_ context.Context, key string, reserved, done time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log(key).Settle(reserved, done)
	return nil
}

// Pause implements Store.
func (m *Memory) Pause(_ context.Context, key string, until time.Time, why string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log(key).Pause(until, why)
	return nil
}

// KV is a Store in a NATS KV bucket shared by every replica: one key per
// receiver holds its Log, and every change is a compare-and-set on the
// key's revision, so two replicas can never both take the last slot of a
// window. Times are the replicas' clocks: keep them in sync (NTP) and the
// local windows a little below the remote limits.
type KV struct {
	kv jetstream.KeyValue
	// tries bounds the compare-and-set retries of one call.
	tries int
}

// NewKV returns a Store in kv.
func NewKV(kv jetstream.KeyValue) *KV { return &KV{kv: kv, tries: 64} }

// ErrContended means a compare-and-set lost too many races in a row.
var ErrContended = errors.New("ratelimit: too many concurrent updates of one receiver's budget")

func (s *KV) get(ctx context.Context, key string) (Log, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Log{}, 0, nil
	}
	if err != nil {
		return Log{}, 0, fmt.Errorf("ratelimit: read %s: %w", key, err)
	}
	var l Log
	if len(e.Value()) > 0 {
		if err := json.Unmarshal(e.Value(), &l); err != nil {
			// A corrupt log must not wedge the receiver: start over.
			l = Log{}
		}
	}
	return l, e.Revision(), nil
}

// put writes l if the key is still at rev (0: does not exist); it reports
// false when another replica changed it first.
func (s *KV) put(ctx context.Context, key string, l Log, rev uint64) (bool, error) {
	data, err := json.Marshal(l)
	if err != nil {
		return false, fmt.Errorf("ratelimit: encode: %w", err)
	}
	if rev == 0 {
		_, err = s.kv.Create(ctx, key, data)
	} else {
		_, err = s.kv.Update(ctx, key, data, rev)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return false, nil
	}
	return false, fmt.Errorf("ratelimit: write %s: %w", key, err)
}

// Load implements Store.
func (s *KV) Load(ctx context.Context, key string, ws []Window, now time.Time) (Log, error) {
	l, _, err := s.get(ctx, key)
	l.Prune(ws, now)
	return l, err
}

// Reserve implements Store.
func (s *KV) Reserve(ctx context.Context, key string, ws []Window, now time.Time) (time.Time, time.Duration, error) {
	for range s.tries {
		l, rev, err := s.get(ctx, key)
		if err != nil {
			return time.Time{}, 0, err
		}
		l.Prune(ws, now)
		if w := l.Wait(ws, now); w > 0 {
			return time.Time{}, w, nil
		}
		at := l.Add(ws, now)
		ok, err := s.put(ctx, key, l, rev)
		if err != nil {
			return time.Time{}, 0, err
		}
		if ok {
			return at, 0, nil
		}
	}
	return time.Time{}, 0, ErrContended
}

// Settle implements Store.
func (s *KV) Settle(ctx context.Context, key string, reserved, done time.Time) error {
	for range s.tries {
		l, rev, err := s.get(ctx, key)
		if err != nil || rev == 0 {
			return err
		}
		before := append([]int64(nil), l.Sends...)
		l.Settle(reserved, done)
		if slices.Equal(before, l.Sends) {
			return nil
		}
		ok, err := s.put(ctx, key, l, rev)
		if err != nil || ok {
			return err
		}
	}
	return ErrContended
}

// Pause implements Store.
func (s *KV) Pause(ctx context.Context, key string, until time.Time, why string) error {
	for range s.tries {
		l, rev, err := s.get(ctx, key)
		if err != nil {
			return err
		}
		if l.PausedUntil >= until.UnixNano() {
			return nil
		}
		l.Pause(until, why)
		ok, err := s.put(ctx, key, l, rev)
		if err != nil || ok {
			return err
		}
	}
	return ErrContended
}

var (
	_ Store = (*Memory)(nil)
	_ Store = (*KV)(nil)
)
