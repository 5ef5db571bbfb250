package field

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/fleetwatch/fleetwatch/pkg/events/jsonscan"
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
const maxDepth = jsonscan.MaxDepth

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
	s := jsonscan.Scanner{B: data}
	s.WS()
	if !s.Eat('{') {
		return false
	}
	s.WS()
	if !s.Eat('}') {
		for {
			s.WS()
			key, escaped, _, ok := s.Str()
			if !ok || escaped {
				return false
			}
			s.WS()
			if !s.Eat(':') {
				return false
			}
			s.WS()
			start := s.I
			if !s.SkipValue(1) {
				return false
			}
			if !assign(members, key, data[start:s.I]) {
				return false
			}
			s.WS()
			if s.Eat(',') {
				continue
			}
			if s.Eat('}') {
				break
			}
			return false
		}
	}
	return s.End()
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
