package tracker

// memberSet holds the devices of a group by slot: a small slice while the
// group has at most smallSet devices (most groups: one per device with the
// default group_by [device_id]), a map beyond. Its order is unspecified:
// every reader sorts or aggregates.
type memberSet struct {
	small []memberEntry // used while m is nil
	m     map[uint32]member
}

type memberEntry struct {
	slot uint32
	m    member
}

const smallSet = 8

func (s *memberSet) len() int {
	if s.m != nil {
		return len(s.m)
	}
	return len(s.small)
}

func (s *memberSet) get(slot uint32) (member, bool) {
	if s.m != nil {
		m, ok := s.m[slot]
		return m, ok
	}
	for i := range s.small {
		if s.small[i].slot == slot {
			return s.small[i].m, true
		}
	}
	return member{}, false
}

func (s *memberSet) put(slot uint32, m member) {
	if s.m != nil {
		s.m[slot] = m
		return
	}
	for i := range s.small {
		if s.small[i].slot == slot {
			s.small[i].m = m
			return
		}
	}
	if len(s.small) < smallSet {
		s.small = append(s.small, memberEntry{slot, m})
		return
	}
	s.m = make(map[uint32]member, 2*smallSet)
	for _, e := range s.small {
		s.m[e.slot] = e.m
	}
	s.small = s.small[:0]
	s.m[slot] = m
}

// del removes slot and returns what it held.
func (s *memberSet) del(slot uint32) (member, bool) {
	if s.m != nil {
		m, ok := s.m[slot]
		if ok {
			delete(s.m, slot)
		}
		return m, ok
	}
	for i := range s.small {
		if s.small[i].slot == slot {
			m := s.small[i].m
			last := len(s.small) - 1
			s.small[i] = s.small[last]
			s.small = s.small[:last]
			return m, true
		}
	}
	return member{}, false
}

// reset empties the set, keeping its storage.
func (s *memberSet) reset() {
	if s.m != nil {
		clear(s.m)
	}
	s.small = s.small[:0]
}

// all iterates the set.
func (s *memberSet) all(yield func(uint32, member) bool) {
	if s.m != nil {
		for slot, m := range s.m {
			if !yield(slot, m) {
				return
			}
		}
		return
	}
	for _, e := range s.small {
		if !yield(e.slot, e.m) {
			return
		}
	}
}
