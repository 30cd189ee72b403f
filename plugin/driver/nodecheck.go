package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Error classes at StartTask (the table is in README.md, "Error classes"):
//
//   - invalid user input (task config, JAR, user, file access): unrecoverable.
//     Retrying cannot help; Nomad reports "Not Restarting".
//   - a problem on the node (crun or java missing or broken since the last
//     fingerprint, a crun failure, the driver shutting down): recoverable.
//     The task itself may be fine, so the restart policy applies, and the
//     next attempt may land after the node was fixed (or on another node).

// nodeProblem is a recoverable error whose message says that the node, not
// the job, is at fault, and what to fix there.
func nodeProblem(format string, args ...any) error {
	return recoverable(fmt.Errorf("node problem: "+format, args...))
}

// errShuttingDown is returned when StartTask races the plugin's Shutdown:
// the task is fine, the next plugin instance can start it.
func errShuttingDown() error {
	return recoverable(errors.New("node problem: the java-crun driver is shutting down; Nomad will retry the task"))
}

// javaReprobeTimeout bounds the `java -version` that StartTask runs when the
// Java install changed since the last fingerprint.
const javaReprobeTimeout = 30 * time.Second

// checkNode re-checks, cheaply, what the last fingerprint found: between two
// fingerprints crun or java may have been removed, chmodded or broken.
// It returns the runtime info to start with (refreshed when java was
// re-probed).
func (d *Driver) checkNode(ctx context.Context, rt runtimeInfo) (runtimeInfo, error) {
	switch {
	case rt.CrunPath == "":
		return rt, nodeProblem("crun is not available on this node (the driver's fingerprint has not found it yet): install crun or set crun_path in the plugin config")
	case rt.JavaErr != nil:
		return rt, nodeProblem("%v: fix the JRE on this node or set java_home in the plugin config", rt.JavaErr)
	case rt.JavaHome == "":
		return rt, nodeProblem("no java home detected on this node yet (the driver's fingerprint has not run): install a JRE or set java_home in the plugin config")
	}
	if err := checkExecutable(rt.CrunPath); err != nil {
		return rt, nodeProblem("crun at %s is not usable: %v: reinstall crun or fix crun_path in the plugin config", rt.CrunPath, err)
	}
	javaBin := filepath.Join(rt.JavaHome, "bin", "java")
	if err := checkExecutable(javaBin); err != nil {
		return rt, nodeProblem("java runtime not usable: %s: %v: reinstall the JRE or fix java_home in the plugin config", javaBin, err)
	}
	// The binary is there; a library may still have gone. javaKey is a few
	// stat calls, a JVM start costs a second under emulation: re-probe only
	// when the install changed since the fingerprint trusted it.
	if key := d.probes.javaKey(rt.JavaHome); key != rt.javaKey {
		pctx, cancel := context.WithTimeout(ctx, javaReprobeTimeout)
		defer cancel()
		ver, err := d.probes.javaVersion(pctx, javaBin)
		if err != nil {
			return rt, nodeProblem("java runtime not usable: %s -version failed: %q: the JRE changed since the last fingerprint; reinstall it", javaBin, firstLine(err.Error()))
		}
		rt.javaKey, rt.javaVersion, rt.javaProbed = key, parseJavaVersion(ver), d.probes.now()
		d.mu.Lock()
		if d.rt.JavaHome == rt.JavaHome {
			d.rt.javaKey, d.rt.javaVersion, d.rt.javaProbed = rt.javaKey, rt.javaVersion, rt.javaProbed
		}
		d.mu.Unlock()
	}
	return rt, nil
}

// checkExecutable says why path cannot be executed: missing, not a regular
// file, or no execute bit (root may run a file with any x bit).
func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (mode %s)", st.Mode())
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("no execute permission (mode %#o)", st.Mode().Perm())
	}
	return nil
}
