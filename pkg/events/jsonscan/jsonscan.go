// Package jsonscan holds the JSON primitives of fleetwatch's
// reflection-free codecs (events.DecodePresence, ingest's field.Object):
// a scanner that checks JSON as encoding/json's scanner does, string
// decoding and quoting byte for byte as encoding/json does them. The
// scanner's methods report false on anything they do not accept; its
// callers then hand the input to encoding/json, which decides.
package jsonscan

import (
	"encoding/binary"
	"math/bits"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

const lowerHex = "0123456789abcdef"

// AppendString quotes s as encoding/json does with HTML escaping on
// (its default): <, > and & as \u003c…, control characters, invalid UTF-8
// as \ufffd, U+2028 and U+2029 escaped.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', lowerHex[b>>4], lowerHex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// MaxDepth bounds the nesting of the values SkipValue skips; callers
// hand deeper ones to encoding/json (which allows 10000 levels).
const MaxDepth = 256

// Scanner reads JSON from B, at I.
type Scanner struct {
	B []byte
	I int
}

// WS skips white space as JSON defines it.
func (s *Scanner) WS() {
	if s.I < len(s.B) && s.B[s.I] > ' ' {
		return // the usual case, inlined
	}
	s.skipWS()
}

func (s *Scanner) skipWS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Eat skips c if it is next.
func (s *Scanner) Eat(c byte) bool {
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Next is the byte at I, or 0 at the end.
func (s *Scanner) Next() byte {
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// End skips white space and reports whether it ended the input.
func (s *Scanner) End() bool {
	s.WS()
	return s.I == len(s.B)
}

// Literal skips lit (true, false or null) if it is next.
func (s *Scanner) Literal(lit string) bool {
	if len(s.B)-s.I >= len(lit) && string(s.B[s.I:s.I+len(lit)]) == lit {
		s.I += len(lit)
		return true
	}
	return false
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// hasZero is non-zero when a byte of x is 0.
func hasZero(x uint64) uint64 { return (x - lsb) & ^x & msb }

// hasLess is non-zero when a byte of x is below n (n <= 128).
func hasLess(x, n uint64) uint64 { return (x - lsb*n) & ^x & msb }

// Plain returns the index of the first byte of b at or after i that is a
// quote, a backslash or a control character (len(b) if there is none),
// and whether the bytes before it, from i, are all ASCII. It reads eight
// bytes at a time.
func Plain(b []byte, i int) (end int, ascii bool) {
	var high uint64 // the OR of the plain bytes: bit 7 set for non-ASCII
	for i+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[i:])
		// The lowest flagged byte is exact (false positives only sit
		// above a true one): it is the first special byte.
		if m := hasZero(x^(lsb*'"')) | hasZero(x^(lsb*'\\')) | hasLess(x, 0x20); m != 0 {
			n := uint(bits.TrailingZeros64(m)) >> 3
			high |= x & (1<<(8*n) - 1)
			return i + int(n), high&msb == 0
		}
		high |= x
		i += 8
	}
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' || c == '\\' || c < 0x20 {
			break
		}
		high |= uint64(c)
	}
	return i, high&msb == 0
}

// Str scans a string whose opening quote is at I and returns its raw
// content (escapes not decoded), I past the closing quote. escaped reports
// a backslash in it, ascii that every byte is ASCII. Escapes are checked as
// JSON defines them, control characters refused; invalid UTF-8 is accepted,
// as encoding/json accepts it.
func (s *Scanner) Str() (raw []byte, escaped, ascii, ok bool) {
	b := s.B
	if s.I >= len(b) || b[s.I] != '"' {
		return nil, false, false, false
	}
	start := s.I + 1
	i := start
	ascii = true
	for {
		j, a := Plain(b, i)
		ascii = ascii && a
		i = j
		if i >= len(b) {
			return nil, false, false, false
		}
		switch b[i] {
		case '"':
			s.I = i + 1
			return b[start:i], escaped, ascii, true
		case '\\':
			n := escapeLen(b[i:])
			if n == 0 {
				return nil, false, false, false
			}
			i += n
			escaped = true
		default: // a control character
			return nil, false, false, false
		}
	}
}

// escapeLen is the length of the escape sequence b starts with (b[0] is a
// backslash), 0 if it is not a JSON escape.
func escapeLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if len(b) < 6 || !isHex(b[2]) || !isHex(b[3]) || !isHex(b[4]) || !isHex(b[5]) {
			return 0
		}
		return 6
	}
	return 0
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func hexVal(c byte) rune {
	switch {
	case c <= '9':
		return rune(c - '0')
	case c >= 'a':
		return rune(c - 'a' + 10)
	}
	return rune(c - 'A' + 10)
}

// u4 decodes the four hex digits after a \u.
func u4(b []byte) rune {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// AppendUnquoted appends the string raw stands for, raw being the content
// of a string Str accepted, decoded exactly as encoding/json decodes it:
// a surrogate pair of \u escapes is one rune, any other surrogate escape
// and each byte of invalid UTF-8 is U+FFFD.
func AppendUnquoted(dst, raw []byte) []byte {
	for r := 0; r < len(raw); {
		c := raw[r]
		switch {
		case c == '\\':
			switch e := raw[r+1]; e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := u4(raw[r+2:])
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := rune(-1)
					if r+6 <= len(raw) && raw[r] == '\\' && raw[r+1] == 'u' {
						rr1 = u4(raw[r+2:])
					}
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						dst = utf8.AppendRune(dst, dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				dst = utf8.AppendRune(dst, rr)
				continue
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			dst = utf8.AppendRune(dst, rr)
			r += size
		}
	}
	return dst
}

// SkipValue skips the JSON value at I, checking it; depth is the nesting
// it is at (values deeper than MaxDepth are refused).
func (s *Scanner) SkipValue(depth int) bool {
	switch s.Next() {
	case '"':
		_, _, _, ok := s.Str()
		return ok
	case '{':
		if depth >= MaxDepth {
			return false
		}
		s.I++
		s.WS()
		if s.Eat('}') {
			return true
		}
		for {
			s.WS()
			if _, _, _, ok := s.Str(); !ok {
				return false
			}
			s.WS()
			if !s.Eat(':') {
				return false
			}
			s.WS()
			if !s.SkipValue(depth + 1) {
				return false
			}
			s.WS()
			if s.Eat('}') {
				return true
			}
			if !s.Eat(',') {
				return false
			}
		}
	case '[':
		if depth >= MaxDepth {
			return false
		}
		s.I++
		s.WS()
		if s.Eat(']') {
			return true
		}
		for {
			s.WS()
			if !s.SkipValue(depth + 1) {
				return false
			}
			s.WS()
			if s.Eat(']') {
				return true
			}
			if !s.Eat(',') {
				return false
			}
		}
	case 't':
		return s.Literal("true")
	case 'f':
		return s.Literal("false")
	case 'n':
		return s.Literal("null")
	}
	return s.SkipNumber()
}

// digits skips decimal digits and reports whether there was one.
func (s *Scanner) digits() bool {
	start := s.I
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
	}
	return s.I > start
}

// SkipNumber skips a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *Scanner) SkipNumber() bool {
	s.Eat('-')
	switch c := s.Next(); {
	case c == '0':
		s.I++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return false
	}
	if s.Eat('.') && !s.digits() {
		return false
	}
	if c := s.Next(); c == 'e' || c == 'E' {
		s.I++
		if c := s.Next(); c == '+' || c == '-' {
			s.I++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// Integer reads a number that encoding/json stores in an integer of the
// given bits: -?(0|[1-9][0-9]*) in range, with no fraction or exponent
// (encoding/json refuses those for an integer field).
func (s *Scanner) Integer(bits int) (int64, bool) {
	neg := s.Eat('-')
	limit := uint64(1)<<(bits-1) - 1
	if neg {
		limit++
	}
	var u uint64
	b, i := s.B, s.I
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		start := i
		for i < len(b) && b[i]-'0' <= 9 {
			u = u*10 + uint64(b[i]-'0')
			i++
		}
		// 19 digits fit in a uint64 (wrapping from 20): compare the
		// count first, then the value.
		if i-start > 19 || u > limit {
			return 0, false // out of range: encoding/json fails
		}
	default:
		return 0, false
	}
	s.I = i
	if c := s.Next(); c == '.' || c == 'e' || c == 'E' {
		return 0, false
	}
	if neg {
		return int64(-u), true //nolint:gosec // u <= 1<<63: -u wraps to the intended value
	}
	return int64(u), true
}
