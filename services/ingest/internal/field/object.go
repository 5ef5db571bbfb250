package field

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Member names one member of a JSON object to read and where its raw value
// goes (json.RawMessage as encoding/json fills it: the value's exact bytes,
// "null" included).
type Member struct {
	// Key is the member's name, ASCII.
	Key string
	Val *json.RawMessage
}

// maxDepth bounds the nesting Object follows itself; deeper inputs take
// encoding/json's path (which allows 10000 levels).
const maxDepth = 256

// Object reads the members of the JSON object data whose keys are in
// members, exactly as json.Unmarshal into a struct with json.RawMessage
// fields tagged with those keys would: the whole input must be valid JSON,
// the last of duplicate members wins, other members are skipped. It does
// it without reflection or copies: the values alias data.
//
// It returns false, having possibly set some values, when it cannot be sure
// to behave like encoding/json: invalid JSON, a key with escapes, a key that
// matches a wanted one only case-insensitively (encoding/json accepts it),
// nesting deeper than maxDepth. The caller then decodes with encoding/json,
// which gives the same values or the exact error.
func Object(data []byte, members []Member) bool {
	s := scanner{data: data}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if !s.eat('}') {
		for {
			s.ws()
			key, ok := s.plainKey()
			if !ok {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			start := s.i
			if !s.value(1) {
				return false
			}
			if !assign(members, key, data[start:s.i]) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				break
			}
			return false
		}
	}
	s.ws()
	return s.i == len(data)
}

// assign stores val in the member named key. It reports false when key
// matches a wanted key only case-insensitively.
func assign(members []Member, key, val []byte) bool {
	for _, m := range members {
		if string(key) == m.Key {
			*m.Val = val
			return true
		}
	}
	ascii := true
	for _, c := range key {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	for _, m := range members {
		// Wanted keys are ASCII: an ASCII key of another length cannot
		// fold to one of them (a non-ASCII one can: U+212A folds to k).
		if (!ascii || len(key) == len(m.Key)) && bytes.EqualFold(key, []byte(m.Key)) {
			return false
		}
	}
	return true
}

type scanner struct {
	data []byte
	i    int
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plainKey reads a member name without escapes and returns its bytes.
func (s *scanner) plainKey() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			return s.data[start : s.i-1], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// value skips one JSON value, checking its syntax.
func (s *scanner) value(depth int) bool {
	if s.i >= len(s.data) {
		return false
	}
	switch c := s.data[s.i]; {
	case c == '"':
		return s.str()
	case c == '{':
		if depth >= maxDepth {
			return false
		}
		s.i++
		s.ws()
		if s.eat('}') {
			return true
		}
		for {
			s.ws()
			if !s.str() {
				return false
			}
			s.ws()
			if !s.eat(':') {
				return false
			}
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat('}')
		}
	case c == '[':
		if depth >= maxDepth {
			return false
		}
		s.i++
		s.ws()
		if s.eat(']') {
			return true
		}
		for {
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(']')
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.i >= len(lit) && string(s.data[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

// str skips a string, checking escapes and control characters (any other
// byte, invalid UTF-8 included, is accepted, as encoding/json does).
func (s *scanner) str() bool {
	if !s.eat('"') {
		return false
	}
	for s.i < len(s.data) {
		c := s.data[s.i]
		s.i++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i >= len(s.data) {
				return false
			}
			e := s.data[s.i]
			s.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(s.data)-s.i < 4 {
					return false
				}
				for _, h := range s.data[s.i : s.i+4] {
					if !isHex(h) {
						return false
					}
				}
				s.i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number skips -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.eat('-')
	switch {
	case s.eat('0'):
	case s.i < len(s.data) && s.data[s.i] >= '1' && s.data[s.i] <= '9':
		s.digits()
	default:
		return false
	}
	if s.eat('.') {
		if s.digits() == 0 {
			return false
		}
	}
	if s.eat('e') || s.eat('E') {
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}
