package task

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func writeLog(t *testing.T, dir, name string, at time.Time) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("# A fatal error has been detected\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestJVMCrashMessageNamesThisRunsNewestFatalErrorLog(t *testing.T) {
	dir := t.TempDir()
	started := time.Now().Add(-time.Minute)
	writeLog(t, dir, "hs_err_pid7.log", started.Add(-time.Hour)) // an earlier attempt's
	writeLog(t, dir, "hs_err_pid2.log", started.Add(10*time.Second))
	writeLog(t, dir, "hs_err_pid3.log", started.Add(5*time.Second))

	got := jvmCrashMessage(int(unix.SIGABRT), dir, "app", started)
	want := "the JVM died of SIGABRT after a fatal error; its report is local/hs_err_pid2.log " +
		"(nomad alloc fs <alloc> app/local/hs_err_pid2.log)"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got := jvmCrashMessage(int(unix.SIGSEGV), dir, "app", started); !strings.Contains(got, "SIGSEGV") {
		t.Fatalf("a SIGSEGV crash: %q", got)
	}
}

func TestJVMCrashMessageIsEmptyWithoutACrashOrWithoutThisRunsLog(t *testing.T) {
	dir := t.TempDir()
	started := time.Now()
	writeLog(t, dir, "hs_err_pid2.log", started.Add(-time.Hour))
	for name, sig := range map[string]int{"old log only": int(unix.SIGABRT), "SIGKILL": int(unix.SIGKILL),
		"SIGTERM": int(unix.SIGTERM), "no signal": 0} {
		if got := jvmCrashMessage(sig, dir, "app", started); got != "" {
			t.Errorf("%s: got %q, want none", name, got)
		}
	}
	writeLog(t, dir, "hs_err_pid2.log", started)
	if got := jvmCrashMessage(int(unix.SIGKILL), dir, "app", started); got != "" {
		t.Errorf("a SIGKILL is not a crash, whatever log is there: %q", got)
	}
	if got := jvmCrashMessage(int(unix.SIGABRT), "", "app", started); got != "" {
		t.Errorf("no local dir: %q", got)
	}
}
