// Package version holds the plugin's version, set at build time with
//
//	-ldflags "-X github.com/nomad-lab/nomad-driver-java-crun/version.Version=v0.1.0
//	          -X github.com/nomad-lab/nomad-driver-java-crun/version.Commit=<git sha>"
package version

// Version is the plugin version reported by PluginInfo and `version`.
var Version = "v0.1.0-dev"

// Commit is the git commit the binary was built from.
var Commit = "unknown"

// String renders "v0.1.0 (commit abc123)".
func String() string {
	return Version + " (commit " + Commit + ")"
}
