// Package labels derives the labels of a device — from its client id (prefix
// rules and regex captures), username, IP subnet, and a device inventory —
// and stores them compactly: every distinct label set is interned once in a
// Table and a device keeps only its 4-byte Set id.
//
// Everything here is pure: no I/O except LoadInventory, which reads the file
// a Config names, and no clock.
package labels

import (
	"slices"
	"strings"
)

// Label is one name=value pair.
type Label struct {
	Name  string
	Value string
}

// Set identifies an interned label set in a Table. The zero Set is the empty
// set.
type Set uint32

// Table interns label sets: each distinct set is stored once, sorted by name.
// A Table is not safe for concurrent use.
type Table struct {
	sets  [][]Label
	index map[string]Set
	buf   []byte
}

// NewTable returns a table holding only the empty set.
func NewTable() *Table {
	return &Table{sets: [][]Label{nil}, index: map[string]Set{"": 0}}
}

// Len is the number of distinct sets interned, the empty one included.
func (t *Table) Len() int { return len(t.sets) }

// Intern returns the id of the set holding ls. Labels with an empty value
// are dropped; of two labels with the same name the later one wins. ls is
// sorted in place.
func (t *Table) Intern(ls []Label) Set {
	ls = normalize(ls)
	t.buf = appendKey(t.buf[:0], ls)
	if s, ok := t.index[string(t.buf)]; ok {
		return s
	}
	s := Set(len(t.sets))
	own := make([]Label, len(ls))
	for i, l := range ls {
		own[i] = Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)}
	}
	t.sets = append(t.sets, own)
	t.index[string(t.buf)] = s
	return s
}

// Labels returns the labels of s, sorted by name. The slice must not be
// modified.
func (t *Table) Labels(s Set) []Label {
	if int(s) >= len(t.sets) {
		return nil
	}
	return t.sets[s]
}

// Get returns the value of one label of s ("" when absent).
func (t *Table) Get(s Set, name string) string {
	ls := t.Labels(s)
	i, ok := slices.BinarySearchFunc(ls, name, func(l Label, n string) int { return strings.Compare(l.Name, n) })
	if !ok {
		return ""
	}
	return ls[i].Value
}

// Map returns the labels of s as a new map (nil when s is empty).
func (t *Table) Map(s Set) map[string]string {
	ls := t.Labels(s)
	if len(ls) == 0 {
		return nil
	}
	m := make(map[string]string, len(ls))
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

// Merge interns the union of a and b; b's value wins for a name in both.
func (t *Table) Merge(a, b Set) Set {
	switch {
	case b == 0:
		return a
	case a == 0:
		return b
	}
	ls := make([]Label, 0, len(t.sets[a])+len(t.sets[b]))
	ls = append(ls, t.sets[a]...)
	ls = append(ls, t.sets[b]...)
	return t.Intern(ls)
}

// normalize sorts ls by name (stable, so the later of two equal names stays
// last), keeps the last label of each name and drops empty values.
func normalize(ls []Label) []Label {
	slices.SortStableFunc(ls, func(a, b Label) int { return strings.Compare(a.Name, b.Name) })
	out := ls[:0]
	for i, l := range ls {
		if i+1 < len(ls) && ls[i+1].Name == l.Name {
			continue
		}
		if l.Value == "" || l.Name == "" {
			continue
		}
		out = append(out, l)
	}
	return out
}

// appendKey encodes sorted labels unambiguously: name, 0, value, 0, ...
// with NUL and 0x01 escaped in both.
func appendKey(b []byte, ls []Label) []byte {
	for _, l := range ls {
		b = appendEscaped(b, l.Name)
		b = append(b, 0)
		b = appendEscaped(b, l.Value)
		b = append(b, 0)
	}
	return b
}

// appendEscaped writes s with NUL and 0x01 escaped as 0x01 0x01 / 0x01 0x02,
// so that a value can never fake a separator.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case 0:
			b = append(b, 1, 2)
		case 1:
			b = append(b, 1, 1)
		default:
			b = append(b, c)
		}
	}
	return b
}
