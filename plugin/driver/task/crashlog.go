package task

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// JVMCrash is the ExitResult error of a JVM that crashed: it says how the
// task ended, so it is not a failure to start the container.
type JVMCrash struct{ msg string }

func (e *JVMCrash) Error() string { return e.msg }

// crashLogName is the JVM's default -XX:ErrorFile name; the task owns local/,
// so any other name there (a newline, terminal escapes) is not trusted.
var crashLogName = regexp.MustCompile(`^hs_err_pid[0-9]+\.log$`)

// jvmCrash names the fatal error log this run of the task wrote in localDir
// (the host path of its local/), for a JVM that died of signal; nil when the
// signal is not a crash or no such log is there. An older log of an earlier
// attempt (written before startedAt) is not this run's. Lstat, not Stat: the
// plugin runs as root, and a symlink the task planted is not followed.
func jvmCrash(signal int, localDir, allocID, taskName string, startedAt time.Time) *JVMCrash {
	name, crash := crashSignals[signal]
	if !crash {
		return nil
	}
	entries, _ := os.ReadDir(localDir)
	newest, newestAt := "", startedAt.Add(-crashLogSlack)
	for _, e := range entries {
		if !crashLogName.MatchString(e.Name()) {
			continue
		}
		st, err := os.Lstat(filepath.Join(localDir, e.Name()))
		if err == nil && st.Mode().IsRegular() && !st.ModTime().Before(newestAt) {
			newest, newestAt = e.Name(), st.ModTime()
		}
	}
	if newest == "" {
		return nil
	}
	return &JVMCrash{fmt.Sprintf("the JVM died of %s after a fatal error; its report is local/%s "+
		"(nomad alloc fs %s %s/local/%s)", name, newest, allocID, taskName, newest)}
}
