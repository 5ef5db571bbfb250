// Package route is the evaluator's Alertmanager-style routing tree: label
// matchers (=, !=, =~, !~), nested routes with continue, receivers, and the
// grouping and timing settings (group_by, group_wait, group_interval,
// repeat_interval) that each route hands down to its children.
//
// It only decides where an alert goes; the tracker keeps the groups.
package route

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/fleetwatch/fleetwatch/services/evaluator/labels"
)

// MatchType is a matcher's operator.
type MatchType uint8

// Matcher operators.
const (
	MatchEqual     MatchType = iota // =
	MatchNotEqual                   // !=
	MatchRegexp                     // =~ (anchored)
	MatchNotRegexp                  // !~ (anchored)
)

func (t MatchType) String() string {
	return [...]string{"=", "!=", "=~", "!~"}[t]
}

// Matcher tests one label. A missing label has the value "", so site!="a"
// matches a device without a site and site="" matches only those.
type Matcher struct {
	Name  string
	Type  MatchType
	Value string
	re    *regexp.Regexp
}

// ErrMatcher is wrapped by every matcher parse error.
var ErrMatcher = errors.New("invalid matcher")

// NewMatcher returns a matcher; regexps are anchored at both ends.
func NewMatcher(name string, t MatchType, value string) (Matcher, error) {
	if !labels.ValidName(name) {
		return Matcher{}, fmt.Errorf("%w: %q is not a label name: use letters, digits and _, not starting with a digit", ErrMatcher, name)
	}
	m := Matcher{Name: name, Type: t, Value: value}
	if t == MatchRegexp || t == MatchNotRegexp {
		re, err := regexp.Compile("^(?:" + value + ")$")
		if err != nil {
			return Matcher{}, fmt.Errorf("%w: %v: use RE2 syntax", ErrMatcher, err)
		}
		m.re = re
	}
	return m, nil
}

// ParseMatcher parses name=value, name!=value, name=~regexp or
// name!~regexp. The value may be double-quoted with Go escapes
// (site="plant 7"); unquoted, it is taken as is, spaces around it trimmed.
func ParseMatcher(s string) (Matcher, error) {
	i := strings.IndexAny(s, "=!")
	if i < 0 {
		return Matcher{}, fmt.Errorf("%w: no operator: write name=value, name!=value, name=~regexp or name!~regexp", ErrMatcher)
	}
	name := strings.TrimSpace(s[:i])
	rest := s[i:]
	var t MatchType
	switch {
	case strings.HasPrefix(rest, "=~"):
		t, rest = MatchRegexp, rest[2:]
	case strings.HasPrefix(rest, "!~"):
		t, rest = MatchNotRegexp, rest[2:]
	case strings.HasPrefix(rest, "!="):
		t, rest = MatchNotEqual, rest[2:]
	case strings.HasPrefix(rest, "="):
		t, rest = MatchEqual, rest[1:]
	default:
		return Matcher{}, fmt.Errorf("%w: bad operator: write name=value, name!=value, name=~regexp or name!~regexp", ErrMatcher)
	}
	value := strings.TrimSpace(rest)
	if strings.HasPrefix(value, `"`) {
		v, err := strconv.Unquote(value)
		if err != nil {
			return Matcher{}, fmt.Errorf("%w: bad quoted value %s: close the quotes and escape \" and \\ inside", ErrMatcher, value)
		}
		value = v
	}
	return NewMatcher(name, t, value)
}

// Matches tests a label value.
func (m Matcher) Matches(v string) bool {
	switch m.Type {
	case MatchEqual:
		return v == m.Value
	case MatchNotEqual:
		return v != m.Value
	case MatchRegexp:
		return m.re.MatchString(v)
	default:
		return !m.re.MatchString(v)
	}
}

// String formats the matcher so that ParseMatcher reads it back.
func (m Matcher) String() string {
	return m.Name + m.Type.String() + strconv.Quote(m.Value)
}

// Matchers all must match.
type Matchers []Matcher

// Matches reports whether every matcher matches the labels get returns.
func (ms Matchers) Matches(get func(name string) string) bool {
	for _, m := range ms {
		if !m.Matches(get(m.Name)) {
			return false
		}
	}
	return true
}

// ParseMatchers parses each string with ParseMatcher.
func ParseMatchers(ss []string) (Matchers, error) {
	out := make(Matchers, 0, len(ss))
	for i, s := range ss {
		m, err := ParseMatcher(s)
		if err != nil {
			return nil, fmt.Errorf("[%d] %q: %w", i, s, err)
		}
		out = append(out, m)
	}
	return out, nil
}
