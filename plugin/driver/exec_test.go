package driver

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/drivers"
	dtestutil "github.com/hashicorp/nomad/plugins/drivers/testutils"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// fakeCrunExec is a crun whose exec runs the command on the host (its pid in
// --pid-file). With a TTY (--tty, or terminal in --process) it does what crun
// exec --console-socket does: it makes a pty, sends the master over the
// socket and runs the command on the slave; without, on its own stdio.
const fakeCrunExec = `#!/usr/bin/env python3
import json, os, shutil, sys, socket, pty, fcntl, termios
a = sys.argv[1:]
while a[0] in ("--root", "--log"): a = a[2:]
while a[0].startswith("--log-format"): a = a[1:]
a = a[1:]  # exec
opts = {}
while a[0].startswith("--"):
    if a[0] == "--tty": opts["tty"] = True; a = a[1:]
    else: opts[a[0]] = a[1]; a = a[2:]
a = a[1:]  # container id
if "--process" in opts:  # kept beside the fake, for assertions
    shutil.copy(opts["--process"], os.path.join(os.path.dirname(sys.argv[0]), "exec-process.json"))
    process = json.load(open(opts["--process"]))
    a, opts["tty"] = process["args"], process.get("terminal", False)
if not opts.get("tty"):
    open(opts["--pid-file"], "w").write(str(os.getpid()))
    os.execvp(a[0], a)
m, s = pty.openpty()
sock = socket.socket(socket.AF_UNIX)
sock.connect(opts["--console-socket"])
socket.send_fds(sock, [b"pty"], [m])
sock.close(); os.close(m)
pid = os.fork()
if pid == 0:
    os.setsid(); fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2): os.dup2(s, fd)
    os.execvp(a[0], a)
os.close(s)
open(opts["--pid-file"], "w").write(str(pid))
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
`

// runningHandle is a task handle whose "shim" is this test process, so it
// counts as running, with crun replaced by script.
func runningHandle(t *testing.T, script string) *task.Handle {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "crun")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The task's own process, as StartTask wrote it: what an exec must run as.
	spec := &specs.Spec{Process: &specs.Process{
		User: specs.User{UID: 65534, GID: 65534, AdditionalGids: []uint32{65534}},
		Args: []string{"/.java-crun/java-crun-init", "java", "-jar", "/local/app.jar"},
		Env:  []string{"PATH=/usr/bin:/bin", "NOMAD_TASK_NAME=main"}, Cwd: "/local",
		NoNewPrivileges: true,
		Capabilities:    &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}},
	}}
	if err := crun.WriteBundle(dir, spec); err != nil {
		t.Fatal(err)
	}
	ticks, _ := shim.StartTicks(os.Getpid())
	st := task.State{ContainerID: "c1", BundleDir: dir, ShimPID: os.Getpid(), ShimStartTicks: ticks}
	return task.RecoverHandle(st, &drivers.TaskConfig{ID: "a/main/1", Name: "main"},
		&crun.CLI{Path: p, Root: filepath.Join(dir, "root")}, hclog.NewNullLogger())
}

// lockedBuffer is an io.WriteCloser safe to read while written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) Close() error   { return nil }
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// streamExec runs ExecTaskStreaming with Nomad's stdin as an io.Pipe that
// stays open (as the client's does) unless input is given and closed.
func streamExec(t *testing.T, h *task.Handle, opts *drivers.ExecOptions, input string, closeStdin bool) (*drivers.ExitResult, string, time.Duration) {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	out := &lockedBuffer{}
	opts.Stdin, opts.Stdout, opts.Stderr = stdinR, out, out
	go func() {
		if input != "" {
			_, _ = stdinW.Write([]byte(input))
		}
		if closeStdin {
			stdinW.Close()
		}
	}()
	type result struct {
		res *drivers.ExitResult
		err error
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		res, err := execTaskStreaming(t.Context(), h, opts)
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("exec %v: %v", opts.Command, r.err)
		}
		return r.res, out.String(), time.Since(start)
	case <-time.After(15 * time.Second):
		t.Fatalf("exec %v did not return after its command ended (output so far %q)", opts.Command, out.String())
	}
	return nil, "", 0
}

func TestExecRunsAsTheTasksOwnProcessNotRoot(t *testing.T) {
	h := runningHandle(t, fakeCrunExec)
	res, out, _ := streamExec(t, h, &drivers.ExecOptions{Command: []string{"echo", "inside"}}, "", true)
	if res.ExitCode != 0 || !strings.Contains(out, "inside") {
		t.Fatalf("exit %d, output %q", res.ExitCode, out)
	}
	data, err := os.ReadFile(filepath.Join(h.State.BundleDir, "exec-process.json"))
	if err != nil {
		t.Fatalf("crun exec got no --process: %v", err)
	}
	var p specs.Process
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	if p.User.UID != 65534 || p.User.GID != 65534 || len(p.User.AdditionalGids) != 1 {
		t.Errorf("exec runs as %+v, want the task's user nobody (65534) with its groups", p.User)
	}
	if !p.NoNewPrivileges || p.Capabilities == nil || len(p.Capabilities.Bounding) != 1 {
		t.Errorf("exec's privileges differ from the task's: nnp %v caps %+v", p.NoNewPrivileges, p.Capabilities)
	}
	if strings.Join(p.Args, " ") != "echo inside" || p.Cwd != "/local" || p.Terminal {
		t.Errorf("exec process args %q cwd %q terminal %v", p.Args, p.Cwd, p.Terminal)
	}
	if len(p.Env) != 2 {
		t.Errorf("exec env %q, want the task's", p.Env)
	}
}

func TestExecStreamingReturnsWhileStdinStaysOpen(t *testing.T) {
	h := runningHandle(t, fakeCrunExec)
	res, out, took := streamExec(t, h, &drivers.ExecOptions{Command: []string{"/bin/sh", "-c", "echo inside; exit 7"}}, "", false)
	if res.ExitCode != 7 || strings.TrimSpace(out) != "inside" {
		t.Fatalf("exit %d, output %q", res.ExitCode, out)
	}
	if took > 5*time.Second {
		t.Fatalf("returned only after %s", took)
	}
}

func TestExecStreamingPassesStdin(t *testing.T) {
	h := runningHandle(t, fakeCrunExec)
	res, out, _ := streamExec(t, h, &drivers.ExecOptions{Command: []string{"/bin/cat"}}, "line one\n", true)
	if res.ExitCode != 0 || out != "line one\n" {
		t.Fatalf("exit %d, output %q", res.ExitCode, out)
	}
}

func TestExecStreamingBackgroundChildDoesNotHoldIt(t *testing.T) {
	h := runningHandle(t, fakeCrunExec)
	res, out, took := streamExec(t, h, &drivers.ExecOptions{Command: []string{"/bin/sh", "-c", "sleep 5 & echo started"}}, "", false)
	if res.ExitCode != 0 || !strings.Contains(out, "started") || took > execOutputGrace+3*time.Second {
		t.Fatalf("exit %d, output %q, took %s", res.ExitCode, out, took)
	}
}

func TestExecTaskTimeoutKillsTheCommand(t *testing.T) {
	h := runningHandle(t, fakeCrunExec)
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	res, err := execTask(t.Context(), h, []string{"/bin/sh", "-c", "echo $$ > " + pidFile + "; exec sleep 30"}, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout of 500ms took %s", took)
	}
	if res.ExitResult.ExitCode == 0 {
		t.Fatalf("a killed command reported success: %+v", res.ExitResult)
	}
	data, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Fatalf("the timed-out command (pid %d) still runs", pid)
	}
}

func TestExecTTY(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the fake crun for TTY exec needs python3")
	}
	h := runningHandle(t, fakeCrunExec)
	resize := make(chan drivers.TerminalSize, 1)
	resize <- drivers.TerminalSize{Height: 41, Width: 103}
	// The command waits for a line, so the resize lands first.
	res, out, _ := streamExec(t, h, &drivers.ExecOptions{Tty: true, ResizeCh: resize,
		Command: []string{"/bin/sh", "-c", "read x; stty size; test -t 0 && echo is-a-tty; exit 4"}}, "go\n", false)
	if res.ExitCode != 4 {
		t.Fatalf("exit %d, output %q", res.ExitCode, out)
	}
	for _, want := range []string{"41 103", "is-a-tty"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
}

// Nomad's own exec conformance cases (plain and TTY: exit codes, stdout and
// stderr, streaming, stdin, stty size after resize events, background
// children) through the plugin's ExecTaskStreaming, over the fake crun.
// In TTY mode Nomad's test stream never closes stdin, as a real client.
func TestExecNomadConformanceOverFakeCrun(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("the fake crun for TTY exec needs python3")
	}
	d := New(hclog.NewNullLogger()).(*Driver)
	t.Cleanup(d.Shutdown)
	d.tasks.Set("a/main/1", runningHandle(t, fakeCrunExec))
	dtestutil.TestExecTaskStreamingBasicResponses(t, dtestutil.NewDriverHarness(t, d), "a/main/1")
}
