package task

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const testAlloc = "5e6f7a8b-0000-0000-0000-000000000000"

func writeLog(t *testing.T, dir, name string, at time.Time) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("# A fatal error has been detected\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
	return path
}

func crashText(signal int, dir string, started time.Time) string {
	if c := jvmCrash(signal, dir, testAlloc, "app", started); c != nil {
		return c.Error()
	}
	return ""
}

func TestJVMCrashNamesThisRunsNewestFatalErrorLog(t *testing.T) {
	dir := t.TempDir()
	started := time.Now().Add(-time.Minute)
	writeLog(t, dir, "hs_err_pid7.log", started.Add(-time.Hour)) // an earlier attempt's
	writeLog(t, dir, "hs_err_pid2.log", started.Add(10*time.Second))
	writeLog(t, dir, "hs_err_pid3.log", started.Add(5*time.Second))

	got := crashText(int(unix.SIGABRT), dir, started)
	want := "the JVM died of SIGABRT after a fatal error; its report is local/hs_err_pid2.log " +
		"(nomad alloc fs " + testAlloc + " app/local/hs_err_pid2.log)"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got := crashText(int(unix.SIGSEGV), dir, started); !strings.Contains(got, "SIGSEGV") {
		t.Fatalf("a SIGSEGV crash: %q", got)
	}
	var crash *JVMCrash
	if err := error(jvmCrash(int(unix.SIGABRT), dir, testAlloc, "app", started)); !errors.As(err, &crash) {
		t.Fatalf("not a *JVMCrash (waitRunning tells a crash from a start failure by it): %T", err)
	}
}

func TestJVMCrashIsNilWithoutACrashOrWithoutThisRunsLog(t *testing.T) {
	dir := t.TempDir()
	started := time.Now()
	writeLog(t, dir, "hs_err_pid2.log", started.Add(-time.Hour))
	for name, sig := range map[string]int{"old log only": int(unix.SIGABRT), "SIGKILL": int(unix.SIGKILL),
		"SIGTERM": int(unix.SIGTERM), "no signal": 0} {
		if got := crashText(sig, dir, started); got != "" {
			t.Errorf("%s: got %q, want none", name, got)
		}
	}
	writeLog(t, dir, "hs_err_pid2.log", started)
	if got := crashText(int(unix.SIGKILL), dir, started); got != "" {
		t.Errorf("a SIGKILL is not a crash, whatever log is there: %q", got)
	}
	if got := crashText(int(unix.SIGABRT), filepath.Join(dir, "missing"), started); got != "" {
		t.Errorf("no local dir: %q", got)
	}
}

func TestJVMCrashIgnoresNamesAndLinksTheTaskPlanted(t *testing.T) {
	dir := t.TempDir()
	started := time.Now()
	writeLog(t, dir, "hs_err_pid2.log\n\x1b[31mforged", started)
	writeLog(t, dir, "hs_err_pidX.log", started)
	target := writeLog(t, t.TempDir(), "secret", started)
	if err := os.Symlink(target, filepath.Join(dir, "hs_err_pid9.log")); err != nil {
		t.Fatal(err)
	}
	if got := crashText(int(unix.SIGABRT), dir, started); got != "" {
		t.Fatalf("got %q, want none", got)
	}
}
