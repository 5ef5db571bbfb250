// Command fleetwatch is the all-in-one fleetwatch tool. `fleetwatch dev` runs
// the whole pipeline in one process on embedded defaults (what `make run`
// starts).
package main

import (
	"os"

	"github.com/fleetwatch/fleetwatch/devstack/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr)) }
