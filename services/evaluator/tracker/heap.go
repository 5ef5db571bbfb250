package tracker

// ordered is the constraint of a heap element: a strict weak order on its
// own type. It is a method constraint rather than a stored less func, so a
// heap is just its slice (len and [0] work) and needs no setup. Note the Go
// compiler still calls before through the generic dictionary rather than
// inlining it; measured cost is a few percent of a raw pop+push, within
// noise on the tracker benchmarks.
type ordered[T any] interface {
	before(T) bool
}

// minHeap is a 4-ary min-heap: O(log n) push and pop, no allocation beyond
// the slice's growth. Four children per node halve the depth of a binary
// heap, and sit in one or two cache lines: with millions of timers, pop is
// bound by cache misses, one per level. Its users delete lazily: entries
// are never removed early, the consumer of pop skips the ones that are
// stale.
type minHeap[T ordered[T]] []T

func (h *minHeap[T]) push(x T) {
	*h = append(*h, x)
	s := *h
	// Sift up with a hole: the parents move down, x is written once.
	// The array ends as with swaps.
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 4
		if !x.before(s[p]) {
			break
		}
		s[i] = s[p]
		i = p
	}
	s[i] = x
}

// pop removes and returns the least element; the heap must not be empty.
func (h *minHeap[T]) pop() T {
	s := *h
	top := s[0]
	n := len(s) - 1
	x := s[n]
	var zero T
	s[n] = zero // drop the reference to the moved element's strings
	s = s[:n]
	*h = s
	if n == 0 {
		return top
	}
	// Sift x down from the root with a hole: at each level the least
	// child (the first of equals) moves up if it is before x. The array
	// ends as with swaps.
	i := 0
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m, least := -1, x
		for end := min(c+4, n); c < end; c++ {
			if s[c].before(least) {
				m, least = c, s[c]
			}
		}
		if m < 0 {
			break
		}
		s[i] = least
		i = m
	}
	s[i] = x
	return top
}
