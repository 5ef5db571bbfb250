package tracker

import "strings"

// interner maps the few distinct strings of a kind (broker node names,
// disconnect reasons) to small integers, so that each device stores 4 bytes
// instead of a string. Index 0 is the empty string.
type interner struct {
	names []string
	index map[string]uint32
}

func newInterner() interner {
	return interner{names: []string{""}, index: map[string]uint32{"": 0}}
}

// smallInterner is the number of names searched one by one before the
// map: the usual handful of broker nodes and reasons, compared cheaper than
// hashed.
const smallInterner = 8

func (in *interner) intern(s string) uint32 {
	if len(in.names) <= smallInterner {
		for i, n := range in.names {
			if n == s {
				return uint32(i)
			}
		}
	} else if i, ok := in.index[s]; ok {
		return i
	}
	i := uint32(len(in.names))
	s = strings.Clone(s)
	in.names = append(in.names, s)
	in.index[s] = i
	return i
}

func (in *interner) name(i uint32) string { return in.names[i] }
