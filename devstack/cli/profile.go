package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profiles writes a CPU profile of a whole run and a heap profile at its
// end: the one-flag profiles of fleetwatch bench and storm (read them with
// go tool pprof).
type profiles struct {
	cpu     *os.File
	memPath string
}

// startProfiles starts the CPU profile to cpuPath ("" : none) and
// remembers memPath ("" : none) for stop.
func startProfiles(cpuPath, memPath string) (*profiles, error) {
	p := &profiles{memPath: memPath}
	if cpuPath == "" {
		return p, nil
	}
	f, err := os.Create(cpuPath)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	p.cpu = f
	return p, nil
}

// stop ends the CPU profile and writes the heap profile (after a GC, so
// it shows what is live).
func (p *profiles) stop() error {
	var errs []error
	if p.cpu != nil {
		pprof.StopCPUProfile()
		errs = append(errs, p.cpu.Close())
		p.cpu = nil
	}
	if p.memPath != "" {
		f, err := os.Create(p.memPath)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("--memprofile: %w", err))...)
		}
		runtime.GC()
		errs = append(errs, pprof.WriteHeapProfile(f), f.Close())
		p.memPath = ""
	}
	return errors.Join(errs...)
}
