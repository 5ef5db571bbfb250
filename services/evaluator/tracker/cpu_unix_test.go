//go:build unix

package tracker

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used (user and system, every
// thread: the garbage collector's too). On a shared machine it measures
// work where wall time measures the neighbours.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
