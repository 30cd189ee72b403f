package task

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A JVM that hits a fatal error (a crash in native or JIT-compiled code, an
// internal error, -XX:+CrashOnOutOfMemoryError) writes hs_err_pid<N>.log in
// its working directory, the task's local/ (the container's cwd), and then
// aborts, or dies of the signal that hit it. The exit code alone (134) tells
// an operator nothing; the event names the log instead.
var crashSignals = map[int]string{
	int(unix.SIGABRT): "SIGABRT",
	int(unix.SIGSEGV): "SIGSEGV",
	int(unix.SIGBUS):  "SIGBUS",
	int(unix.SIGILL):  "SIGILL",
	int(unix.SIGFPE):  "SIGFPE",
}

// crashLogSlack allows for the coarse mtime of some filesystems: a log
// written in the task's first second must still count as this run's.
const crashLogSlack = 2 * time.Second

// jvmCrashMessage names the fatal error log this run of the task wrote in
// localDir (the host path of its local/), for a JVM that died of signal; ""
// when the signal is not a crash or no such log is there. An older log of an
// earlier attempt (written before startedAt) is not this run's.
func jvmCrashMessage(signal int, localDir, taskName string, startedAt time.Time) string {
	name, crash := crashSignals[signal]
	if !crash || localDir == "" {
		return ""
	}
	logs, _ := filepath.Glob(filepath.Join(localDir, "hs_err_pid*.log"))
	newest, newestAt := "", startedAt.Add(-crashLogSlack)
	for _, path := range logs {
		st, err := os.Stat(path)
		if err == nil && st.Mode().IsRegular() && !st.ModTime().Before(newestAt) {
			newest, newestAt = filepath.Base(path), st.ModTime()
		}
	}
	if newest == "" {
		return ""
	}
	return fmt.Sprintf("the JVM died of %s after a fatal error; its report is local/%s "+
		"(nomad alloc fs <alloc> %s/local/%s)", name, newest, taskName, newest)
}
