//go:build unix

package telemetry

import (
	"syscall"
	"time"
)

// ProcessCPU is the CPU time (user and system, every thread, the garbage
// collector's too) this process has used so far. On a shared machine it
// measures work where wall time also measures the neighbours; benchmarks
// report it per operation.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
