package bench

import "testing"

func TestStatTicks(t *testing.T) {
	for _, tc := range []struct {
		name string
		stat string
		want uint64
		ok   bool
	}{
		{"plain", "4242 (clickhouse-serv) S 1 4242 4242 0 -1 4194560 1 0 0 0 1500 250 0 0 20 0 90 0 100 1 1", 1750, true},
		{"spaces and parens in the name", "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0", 7, true},
		{"cut short", "7 (x) S 1 2 3", 0, false},
		{"no name", "7 x S 1 2 3 4 5 6 7 8 9 10 11 12", 0, false},
		{"not a number", "7 (x) S 1 7 7 0 -1 0 0 0 0 0 u 4 0 0", 0, false},
	} {
		got, ok := statTicks([]byte(tc.stat))
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: statTicks = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestServerMeterNeedsLoopback(t *testing.T) {
	for _, addr := range []string{"10.0.0.5:9000", "clickhouse.example:9000", "no-port"} {
		if m := startServerCPU(addr); m.ok {
			t.Errorf("startServerCPU(%q) measures a server that is not on this machine", addr)
		}
	}
}
