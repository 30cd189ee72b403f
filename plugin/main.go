// Command nomad-driver-java-crun is the java-crun Nomad task driver plugin.
//
// Run by Nomad as a plugin; `nomad-driver-java-crun version` prints the
// version. Each task's supervisor and init is cmd/java-crun-shim; where that
// is not installed, this binary, re-executed by the driver with a marker in
// its environment, stands in for it (see package shim).
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins"

	"github.com/nomad-lab/nomad-driver-java-crun/driver"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
	"github.com/nomad-lab/nomad-driver-java-crun/version"
)

func main() {
	shim.MaybeRun()
	if len(os.Args) == 2 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Printf("nomad-driver-java-crun %s\n", version.String())
		return
	}
	plugins.Serve(func(log hclog.Logger) interface{} { return driver.New(log) })
}
