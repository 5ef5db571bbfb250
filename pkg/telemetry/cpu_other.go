//go:build !unix

package telemetry

import "time"

// ProcessCPU is 0 where getrusage is not available: CPU figures are left out.
func ProcessCPU() time.Duration { return 0 }
