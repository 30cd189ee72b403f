package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	MaybeRun() // Launch re-executes this test binary as the shim
	os.Exit(m.Run())
}

// fakeCrunRun stands in for `crun run --detach`: like crun it starts the
// container's init (here a shell running initScript) as a child, writes its
// pid to --pid-file and exits at once, orphaning the init. `delete` is logged.
func fakeCrunRun(t *testing.T, dir, initScript string) string {
	t.Helper()
	script := `#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in --root) shift 2;; --log) log=$2; shift 2;; --log-format=*) shift;; *) break;; esac; done
cmd=$1; shift
echo "$cmd $*" >> ` + filepath.Join(dir, "calls") + `
case "$cmd" in
run)
  while [ $# -gt 1 ]; do case "$1" in --pid-file) pidfile=$2; shift 2;; --bundle) shift 2;; --detach) shift;; *) break;; esac; done
  ` + initScript + `
  ;;
delete) exit 0;;
esac
`
	p := filepath.Join(dir, "crun")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// superviseWith runs a real shim process over a fake crun and returns its
// exit record and the container's stdout.
func superviseWith(t *testing.T, initScript string, sent []int, timeout time.Duration) (*Exit, string, string) {
	t.Helper()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{CrunPath: fakeCrunRun(t, dir, initScript), CrunRoot: filepath.Join(dir, "root"),
		ContainerID: "c1", Bundle: bundle, CrunTimeout: timeout}
	if err := WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for _, s := range sent {
		if err := RecordSignal(bundle, s); err != nil {
			t.Fatal(err)
		}
	}
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd, err := Launch(bundle, out, out)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shim: %v", err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("shim did not finish")
	}
	exit, err := ReadExit(bundle)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(bundle, ShimLogFile))
		t.Fatalf("no exit record: %v (shim log: %s)", err, log)
	}
	stdout, _ := os.ReadFile(filepath.Join(dir, "stdout"))
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	return exit, string(stdout), string(calls)
}

func TestSuperviseReportsRealExitStatus(t *testing.T) {
	cases := []struct {
		name       string
		init       string // shell of the fake container's init
		sent       []int
		code, sign int
	}{
		// The init outlives crun: it is re-parented to the shim while running.
		{"app exits 143 by itself", `sh -c 'echo from-init; sleep 0.3; exit 143' & echo $! > "$pidfile"`, nil, 143, 0},
		{"app exits 137 by itself", `sh -c 'sleep 0.3; exit 137' & echo $! > "$pidfile"`, nil, 137, 0},
		{"killed by SIGTERM", `sh -c 'sleep 0.3; kill -TERM $$' & echo $! > "$pidfile"`, nil, 143, 15},
		{"exits 143 after the driver sent SIGTERM", `sh -c 'sleep 0.3; exit 143' & echo $! > "$pidfile"`, []int{15}, 143, 15},
		// The init is already dead when crun exits: a zombie handed over
		// (exec: a shell waiting for `sleep` would reap it, crun does not).
		{"exits before crun does", `sh -c 'exit 3' & echo $! > "$pidfile"; exec sleep 0.3`, nil, 3, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exit, stdout, calls := superviseWith(t, c.init, c.sent, 0)
			if exit.ExitCode != c.code || exit.Signal != c.sign || exit.Err != "" || exit.CrunError != "" {
				t.Fatalf("exit %+v, want code %d signal %d", exit, c.code, c.sign)
			}
			if exit.WaitStatus == nil {
				t.Error("no raw wait status recorded")
			}
			if !strings.Contains(calls, "run --detach --pid-file") || !strings.Contains(calls, "delete c1") {
				t.Errorf("crun calls:\n%s", calls)
			}
			if strings.Contains(c.init, "from-init") && !strings.Contains(stdout, "from-init") {
				t.Errorf("the container's stdout did not reach the shim's: %q", stdout)
			}
		})
	}
}

func TestSuperviseReportsCrunFailure(t *testing.T) {
	exit, _, calls := superviseWith(t, `echo '{"level":"error","msg":"mount /usr: Permission denied"}' > "$log"; exit 1`, nil, 0)
	if exit.CrunError != "crun: mount /usr: Permission denied" || exit.ExitCode != 1 {
		t.Fatalf("exit %+v", exit)
	}
	if strings.Contains(calls, "delete") {
		t.Errorf("nothing to delete after a failed run: %s", calls)
	}
}

func TestSuperviseBoundsAHungCrunRun(t *testing.T) {
	start := time.Now()
	exit, _, _ := superviseWith(t, `exec sleep 60`, nil, 500*time.Millisecond)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("hung crun held the shim for %s", time.Since(start))
	}
	if !strings.Contains(exit.CrunError, "run --detach c1` did not return within 500ms") {
		t.Fatalf("exit %+v", exit)
	}
}
