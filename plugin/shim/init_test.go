package shim

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type initRun struct {
	cmd    *exec.Cmd
	status *os.File
	lines  chan string
}

// startInit runs this test binary as the init (argv[0] java-crun-init) with
// `sh -c script` standing in for java, and the status pipe on fd 3.
func startInit(t *testing.T, script string) *initRun {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Path: self, Args: []string{InitPath, "/bin/sh", "-c", script}, ExtraFiles: []*os.File{w}}
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); r.Close() })
	run := &initRun{cmd: cmd, status: r, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			run.lines <- sc.Text()
		}
		close(run.lines)
	}()
	return run
}

// waitForChild waits until the init has started its child: from then on it
// forwards every signal (before, the Go runtime is still starting).
func (r *initRun) waitForChild(t *testing.T) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", r.cmd.Process.Pid))
		for _, task := range tasks {
			if b, _ := os.ReadFile(task); len(strings.TrimSpace(string(b))) > 0 {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the init started no child within 1s")
}

func (r *initRun) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				t.Fatalf("output ended before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q within 10s", prefix)
		}
	}
}

// finish waits for the init and returns its exit code and the child's
// wait status from the pipe.
func (r *initRun) finish(t *testing.T) (int, unix.WaitStatus) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("init did not exit")
	}
	data, _ := io.ReadAll(r.status)
	ws, ok := ParseInitStatus(data)
	if !ok {
		t.Fatalf("no wait status on the pipe: %q", data)
	}
	return r.cmd.ProcessState.ExitCode(), ws
}

func TestInitForwardsASignalWithoutHandler(t *testing.T) {
	// Sent as soon as the child exists (as the driver does, see
	// Handle.Signal), maybe before it even exec'd: it still gets the
	// signal, and dies of it as it would outside a container.
	r := startInit(t, `sleep 5`)
	r.waitForChild(t)
	if err := r.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	code, ws := r.finish(t)
	if !ws.Signaled() || ws.Signal() != unix.SIGUSR1 || code != 128+int(unix.SIGUSR1) {
		t.Fatalf("exit %d, child status %v: want the child killed by SIGUSR1 and exit 138", code, ws)
	}
}

func TestInitForwardsToAHandler(t *testing.T) {
	r := startInit(t, `trap 'echo got USR2; exit 7' USR2; trap 'echo got HUP' HUP; echo ready; while :; do sleep 0.05; done`)
	r.waitLine(t, "ready")
	_ = r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLine(t, "got HUP")
	_ = r.cmd.Process.Signal(syscall.SIGUSR2)
	r.waitLine(t, "got USR2")
	code, ws := r.finish(t)
	if code != 7 || !ws.Exited() || ws.ExitStatus() != 7 {
		t.Fatalf("exit %d status %v, want 7", code, ws)
	}
}

func TestInitExitCodeAbove128IsNotASignal(t *testing.T) {
	code, ws := startInit(t, `exit 143`).finish(t)
	if code != 143 || ws.Signaled() || ws.ExitStatus() != 143 {
		t.Fatalf("exit %d status %v", code, ws)
	}
}

func TestInitReapsOrphans(t *testing.T) {
	// The subshell's sleep is orphaned and re-parented to the init; once it
	// has exited, only the stand-in JVM itself may remain the init's child.
	r := startInit(t, `( sleep 0.2 & ); sleep 1.5
kids=$(cat /proc/$PPID/task/*/children)
for p in $kids; do grep -q '^State:.*Z' /proc/$p/status 2>/dev/null && echo "zombie $p"; done
echo "children $kids self $$"`)
	line := r.waitLine(t, "children ")
	f := strings.Fields(line) // children PID... self PID
	if len(f) != 4 || f[1] != f[3] {
		t.Fatalf("%q: the init still has children other than the JVM (zombies not reaped)", line)
	}
	if code, _ := r.finish(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestInitCannotStartProgram(t *testing.T) {
	self, _ := os.Executable()
	cmd := &exec.Cmd{Path: self, Args: []string{InitPath, "/nonexistent/java"}}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 127 || !strings.Contains(string(out), "cannot start /nonexistent/java") {
		t.Fatalf("exit %d: %s", cmd.ProcessState.ExitCode(), out)
	}
}

func TestInitEnvTurnsOffPreemptionForTheInitAlone(t *testing.T) {
	self, _ := os.Executable()
	task := []string{"PATH=/usr/bin:/bin", "APP=1"}
	cmd := &exec.Cmd{Path: self, Args: []string{InitPath, "/bin/sh", "-c", "env | sort"}, Env: InitEnv(task)}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, []string{"APP=1", "PATH=/usr/bin:/bin", "PWD=" + mustGetwd(t)}) {
		t.Fatalf("the JVM's environment: %q, want the task's alone", got)
	}
	if env := InitEnv(task); !slices.Contains(env, "GODEBUG=asyncpreemptoff=1") {
		t.Fatalf("the init's environment %q has no asyncpreemptoff", env)
	}
	// A task's own GODEBUG is left as it is, for the init and the JVM.
	own := []string{"GODEBUG=madvdontneed=1"}
	if env := InitEnv(own); !slices.Equal(env, own) {
		t.Fatalf("InitEnv(%q) = %q", own, env)
	}
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
