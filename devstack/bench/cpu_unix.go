//go:build unix

package bench

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system, every thread) this process has
// used so far. The embedded NATS server, the MQTT broker and the stages all
// run in it, so CPU per message measures the whole in-process path, and it
// holds on a shared machine where rates do not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
