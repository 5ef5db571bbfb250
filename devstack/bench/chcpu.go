package bench

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// procTicksPerSecond is the unit of the CPU times in /proc/<pid>/stat
// (USER_HZ, 100 on every Linux architecture).
const procTicksPerSecond = 100

// serverMeter measures the CPU time a local ClickHouse server spends on a
// number of rows. ClickHouse is another process, so the process CPU of the
// bench does not include it; on a loopback address it runs on the same
// cores, and its share decides how many rows per second the machine has
// room for.
type serverMeter struct {
	start time.Duration
	ok    bool
}

// startServerCPU starts a meter of the ClickHouse server at addr. It
// measures nothing when addr is not a loopback address or no
// clickhouse-server process can be read from /proc.
func startServerCPU(addr string) serverMeter {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return serverMeter{}
	}
	d, ok := clickhouseCPU()
	return serverMeter{start: d, ok: ok}
}

// perOp returns the server's CPU µs per operation for n operations since
// the meter started (0: not measured).
func (m serverMeter) perOp(n int) float64 {
	if !m.ok || n <= 0 {
		return 0
	}
	d, ok := clickhouseCPU()
	if !ok || d <= m.start {
		return 0
	}
	return (d - m.start).Seconds() * 1e6 / float64(n)
}

// clickhouseCPU sums the CPU time (user and system) of every
// clickhouse-server process on this machine, merges included.
func clickhouseCPU() (time.Duration, bool) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, false
	}
	var ticks uint64
	found := false
	for _, dir := range dirs {
		// comm is the executable's name cut to 15 bytes.
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || string(bytes.TrimSpace(comm)) != "clickhouse-serv" {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		t, ok := statTicks(stat)
		if !ok {
			continue
		}
		ticks += t
		found = true
	}
	return time.Duration(ticks) * time.Second / procTicksPerSecond, found
}

// statTicks returns utime + stime from a /proc/<pid>/stat line: fields 14
// and 15, counted after the parenthesised command name (which may itself
// contain spaces).
func statTicks(stat []byte) (uint64, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	// After ") " come field 3 (state) onwards: utime is the 12th of them.
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return utime + stime, true
}
