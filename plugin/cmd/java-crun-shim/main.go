// Command java-crun-shim is the java-crun driver's per-container supervisor
// and the container's init (see package shim). The driver starts it twice per
// task; it is a separate, small binary because the plugin's own binary spends
// most of a second in its packages' init functions under emulation, and
// nothing of Nomad's is needed here.
//
// Install it as java-crun.d/java-crun-shim beside the plugin binary (or set
// the plugin's shim_path), from the same build: the driver refuses a shim
// whose --version differs from its own.
package main

import (
	"fmt"
	"os"

	"github.com/nomad-lab/nomad-driver-java-crun/shim"
	"github.com/nomad-lab/nomad-driver-java-crun/version"
)

func main() {
	shim.MaybeRun()
	if len(os.Args) == 2 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println(shim.VersionLine(version.String()))
		return
	}
	fmt.Fprintln(os.Stderr, "java-crun-shim: the java-crun driver starts this program for each task; it is not run by hand (`java-crun-shim --version` prints its build)")
	os.Exit(2)
}
