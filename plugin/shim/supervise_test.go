package shim

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "crun" {
		os.Exit(fakeCrun(os.Args[1:]))
	}
	MaybeRun() // Launch re-executes this test binary as the shim
	os.Exit(m.Run())
}

// fakeCrun is this test binary run as "crun" (through a symlink). Its `run
// --detach` does what crun's does: it starts the container's init (here
// `sh -c <bundle>/fake-init`) as its child, writes the init's pid to
// --pid-file and exits without reaping it, optionally after a while
// (fake-linger), so that the init is handed over running or already a
// zombie. fake-mode "fail" or "hang" makes crun itself fail or hang.
// Every call is logged to <bundle>/../calls.
func fakeCrun(args []string) int {
	var logPath, pidFile, bundle string
	for len(args) > 0 && strings.HasPrefix(args[0], "--") {
		switch {
		case args[0] == "--log":
			logPath, args = args[1], args[2:]
		case args[0] == "--root":
			args = args[2:]
		default:
			args = args[1:]
		}
	}
	cmd, args := args[0], args[1:]
	for len(args) > 1 && strings.HasPrefix(args[0], "--") {
		switch args[0] {
		case "--pid-file":
			pidFile, args = args[1], args[2:]
		case "--bundle":
			bundle, args = args[1], args[2:]
		default:
			args = args[1:]
		}
	}
	if bundle == "" {
		bundle = filepath.Join(filepath.Dir(filepath.Dir(os.Args[0])), "bundle")
	}
	calls, _ := os.OpenFile(filepath.Join(filepath.Dir(bundle), "calls"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	fmt.Fprintln(calls, strings.Join(os.Args[1:], " "))
	calls.Close()
	if cmd != "run" {
		return 0 // delete
	}
	mode, _ := os.ReadFile(filepath.Join(bundle, "fake-mode"))
	switch string(mode) {
	case "fail":
		_ = os.WriteFile(logPath, []byte(`{"level":"error","msg":"mount /usr: Permission denied"}`+"\n"), 0o600)
		return 1
	case "hang":
		time.Sleep(time.Minute)
		return 0
	}
	script, _ := os.ReadFile(filepath.Join(bundle, "fake-init"))
	init := exec.Command("/bin/sh", "-c", string(script))
	if string(mode) == "java-crun-init" {
		// As in a real container: our init runs the "JVM", with the status
		// pipe that crun --preserve-fds=1 passes on as fd 3.
		self, _ := os.Executable()
		init = &exec.Cmd{Path: self, Args: []string{InitPath, "/bin/sh", "-c", string(script)},
			ExtraFiles: []*os.File{os.NewFile(3, "status")}}
	}
	init.Stdout, init.Stderr = os.Stdout, os.Stderr
	if err := init.Start(); err != nil {
		return 1
	}
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(init.Process.Pid)), 0o600)
	if linger, _ := os.ReadFile(filepath.Join(bundle, "fake-linger")); len(linger) > 0 {
		d, _ := time.ParseDuration(string(linger))
		time.Sleep(d)
	}
	return 0 // the init is left to the subreaper
}

// superviseWith runs a real shim process over a fake crun and returns its
// exit record and the container's stdout.
func superviseWith(t *testing.T, initScript, mode, linger string, sent []int, timeout time.Duration) (*Exit, string, string) {
	t.Helper()
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	crunPath := filepath.Join(dir, "bin", "crun")
	if err := os.MkdirAll(filepath.Dir(crunPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, crunPath); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"fake-init": initScript, "fake-mode": mode, "fake-linger": linger} {
		if err := os.WriteFile(filepath.Join(bundle, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &Config{CrunPath: crunPath, CrunRoot: filepath.Join(dir, "root"),
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
	launcher, _ := os.Executable()
	cmd, err := Launch(launcher, bundle, out, out)
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
	// The driver's start wait reads the started record: it names the pid crun
	// wrote once crun started the container, and exists only then.
	started, serr := ReadStarted(bundle)
	crunPid, _ := os.ReadFile(filepath.Join(bundle, PidFile))
	if exit.CrunError == "" && exit.Err == "" {
		if serr != nil || strconv.Itoa(started.Pid) != strings.TrimSpace(string(crunPid)) {
			t.Errorf("started record %+v (%v), crun's pid file %q", started, serr, crunPid)
		}
	} else if serr == nil {
		t.Errorf("a start recorded (%+v) although crun did not start the container", started)
	}
	stdout, _ := os.ReadFile(filepath.Join(dir, "stdout"))
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	return exit, string(stdout), string(calls)
}

func TestSuperviseReportsRealExitStatus(t *testing.T) {
	cases := []struct {
		name       string
		init       string // shell of the fake container's init
		linger     string // crun exits this long after starting the init
		sent       []int
		code, sign int
	}{
		// The init outlives crun: it is re-parented to the shim while running.
		{"app exits 143 by itself", `echo from-init; sleep 0.3; exit 143`, "", nil, 143, 0},
		{"app exits 137 by itself", `sleep 0.3; exit 137`, "", nil, 137, 0},
		{"killed by SIGTERM", `sleep 0.3; kill -TERM $$`, "", nil, 143, 15},
		{"exits 143 after the driver sent SIGTERM", `sleep 0.3; exit 143`, "", []int{15}, 143, 15},
		// The init is already dead when crun exits: a zombie handed over.
		{"exits before crun does", `exit 3`, "300ms", nil, 3, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exit, stdout, calls := superviseWith(t, c.init, "", c.linger, c.sent, 0)
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
	exit, _, calls := superviseWith(t, "", "fail", "", nil, 0)
	if exit.CrunError != "crun: mount /usr: Permission denied" || exit.ExitCode != 1 {
		t.Fatalf("exit %+v", exit)
	}
	if strings.Contains(calls, "delete") {
		t.Errorf("nothing to delete after a failed run: %s", calls)
	}
}

func TestSuperviseBoundsAHungCrunRun(t *testing.T) {
	start := time.Now()
	exit, _, _ := superviseWith(t, "", "hang", "", nil, 500*time.Millisecond)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("hung crun held the shim for %s", time.Since(start))
	}
	if !strings.Contains(exit.CrunError, "run --detach c1` did not return within 500ms") {
		t.Fatalf("exit %+v", exit)
	}
}

// TestSuperviseUsesTheInitsReport: the init exits 128+N when the JVM was
// killed by signal N (it cannot die of the JVM's signal itself); the shim
// must report what the init saw, not the init's own exit code.
func TestSuperviseUsesTheInitsReport(t *testing.T) {
	cases := []struct {
		name       string
		init       string
		code, sign int
	}{
		{"JVM killed by SIGTERM", `sleep 0.3; kill -TERM $$`, 143, 15},
		{"JVM exits 143 by itself", `sleep 0.3; exit 143`, 143, 0},
		{"JVM killed by SIGUSR1", `kill -USR1 $$`, 138, 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exit, _, calls := superviseWith(t, c.init, "java-crun-init", "", nil, 0)
			if exit.ExitCode != c.code || exit.Signal != c.sign || exit.Err != "" {
				t.Fatalf("exit %+v, want code %d signal %d", exit, c.code, c.sign)
			}
			if exit.InitWaitStatus == nil || exit.WaitStatus == nil {
				t.Fatalf("wait statuses not recorded: %+v", exit)
			}
			if !strings.Contains(calls, "--preserve-fds=1") {
				t.Errorf("crun run without --preserve-fds=1: %s", calls)
			}
		})
	}
}
