package backtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/fleetwatch/fleetwatch/pkg/events"
)

// scanned is what a history reads as: its lines, events (ids left out,
// strings copied), skipped lines, first error and read error.
type scanned struct {
	in  Input
	evs []events.PresenceEvent
	err error
}

// scanLines reads r as ReadJSONL did with a bufio.Scanner, one line at a
// time: the reference of ReadJSONL's own splitting.
func scanLines(r io.Reader) scanned {
	var s scanned
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, chunkBytes), maxLine) // as ReadJSONL had it
	for sc.Scan() {
		s.in.Lines++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e events.PresenceEvent
		err := events.DecodePresence(sc.Bytes(), &e)
		if err != nil {
			err = fmt.Errorf("invalid presence event JSON: %w", err)
		} else {
			err = check(&e)
		}
		if err != nil {
			s.in.Skipped++
			if s.in.FirstError == "" {
				s.in.FirstError = fmt.Sprintf("line %d: %v", s.in.Lines, err)
			}
			continue
		}
		e.ID = ""
		s.evs = append(s.evs, e)
	}
	s.err = sc.Err()
	return s
}

// readAll reads r with ReadJSONL.
func readAll(r io.Reader) scanned {
	var s scanned
	s.in, s.err = ReadJSONL(r, func(es []events.PresenceEvent) {
		for _, e := range es {
			e.DeviceID, e.Node, e.IP, e.Username, e.Source = strings.Clone(e.DeviceID), strings.Clone(e.Node),
				strings.Clone(e.IP), strings.Clone(e.Username), strings.Clone(e.Source)
			e.Kind, e.Reason, e.RawReason, e.Protocol = events.Kind(strings.Clone(string(e.Kind))),
				events.Reason(strings.Clone(string(e.Reason))), strings.Clone(e.RawReason), strings.Clone(e.Protocol)
			s.evs = append(s.evs, e)
		}
	})
	return s
}

// TestReadJSONLSplitsLikeScanner: ReadJSONL reads its buffers itself; it
// splits lines exactly as bufio.Scanner did (CRLF, empty lines, a last
// line without newline, lines cut by a buffer's end or longer than one,
// reads of any size, read errors, a line past the limit).
func TestReadJSONLSplitsLikeScanner(t *testing.T) {
	var gen bytes.Buffer
	if err := Generate(&gen, GenOptions{Devices: 300, Events: 12_000, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(gen.String(), "\n"), "\n")
	long := `{"v":1,"device_id":"long","kind":"connected","node":"n","broker_ts_ms":5,"pad":"` +
		strings.Repeat("x", 3*chunkBytes) + `"}`
	var mixed strings.Builder
	for i, l := range lines {
		switch {
		case i == 5_000:
			mixed.WriteString(long + "\n")
		case i%997 == 3:
			mixed.WriteString("\n\r\n")
		case i%1_511 == 8:
			mixed.WriteString(`{"v":1,"device_id":` + "\r\n")
		}
		mixed.WriteString(l)
		if i%2 == 0 {
			mixed.WriteString("\r")
		}
		mixed.WriteString("\n")
	}
	small := strings.Join(lines[:400], "\r\n") // no final newline
	tooLong := strings.Join(lines[:3_000], "\n") + "\n" + strings.Repeat("y", maxLine) + "\n" + lines[0] + "\n"

	for _, tt := range []struct {
		name string
		in   string
		wrap func(io.Reader) io.Reader
	}{
		{"generated", gen.String(), nil},
		{"generated, half reads", gen.String(), iotest.HalfReader},
		{"mixed", mixed.String(), nil},
		{"mixed, data with EOF", mixed.String(), iotest.DataErrReader},
		{"small, one byte reads", small, iotest.OneByteReader},
		{"small, timeout", small, iotest.TimeoutReader},
		{"line too long", tooLong, nil},
		{"empty", "", nil},
		{"newlines only", "\n\n\r\n", nil},
		{"one line, no newline", lines[1], nil},
	} {
		r := func() io.Reader {
			if tt.wrap == nil {
				return strings.NewReader(tt.in)
			}
			return tt.wrap(strings.NewReader(tt.in))
		}
		want, got := scanLines(r()), readAll(r())
		if got.in != want.in {
			t.Errorf("%s: input %+v, want %+v", tt.name, got.in, want.in)
		}
		if !errors.Is(got.err, want.err) || (want.err == nil) != (got.err == nil) ||
			want.err != nil && got.err.Error() != fmt.Sprintf("read line %d: %v", want.in.Lines+1, want.err) {
			t.Errorf("%s: error %v, want %v after %d lines", tt.name, got.err, want.err, want.in.Lines)
		}
		if len(got.evs) != len(want.evs) {
			t.Errorf("%s: %d events, want %d", tt.name, len(got.evs), len(want.evs))
			continue
		}
		for i := range want.evs {
			if !reflect.DeepEqual(got.evs[i], want.evs[i]) {
				t.Errorf("%s: event %d: %+v, want %+v", tt.name, i, got.evs[i], want.evs[i])
				break
			}
		}
	}
}
