package driver

// Driver-harness tests: they run real crun and java, so they need root, a
// pure cgroup v2 host with crun, and the lab's test JARs. The lab compiles
// them (go test -c ./driver) and runs the binary inside the lab VM with
// JAVA_CRUN_TEST_JARS=/opt/lab/jars; elsewhere they skip, saying why.

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/helper/uuid"
	"github.com/hashicorp/nomad/nomad/structs"
	"github.com/hashicorp/nomad/plugins/base"
	"github.com/hashicorp/nomad/plugins/drivers"
	dtestutil "github.com/hashicorp/nomad/plugins/drivers/testutils"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

const (
	jarsEnv     = "JAVA_CRUN_TEST_JARS"
	noLimitsEnv = "JAVA_CRUN_TEST_NO_LIMITS" // "1": run tasks without resource limits
	crunEnv     = "JAVA_CRUN_TEST_CRUN_PATH" // optional crun_path for the driver under test
)

func TestMain(m *testing.M) {
	shim.MaybeRun() // the driver re-executes this test binary as its shim
	os.Exit(m.Run())
}

// requireRuntime skips unless this host can really run containers.
func requireRuntime(t *testing.T) string {
	t.Helper()
	jars := os.Getenv(jarsEnv)
	switch {
	case os.Geteuid() != 0:
		t.Skip("harness tests need root (crun, cgroups)")
	case cgroupMode() != "v2":
		t.Skipf("harness tests need a pure cgroup v2 host; /sys/fs/cgroup here is %s (crun refuses hybrid mode): run them in the lab VM", cgroupMode())
	case jars == "":
		t.Skipf("%s is unset: point it at the directory holding hello.jar, sleeper.jar and exitcode.jar", jarsEnv)
	}
	if _, err := findCrun("crun", exec.LookPath); err != nil {
		t.Skipf("harness tests need crun: %v", err)
	}
	return jars
}

func requireLimits(t *testing.T) {
	t.Helper()
	if os.Getenv(noLimitsEnv) == "1" {
		t.Skipf("%s=1: this host has no cgroup memory controller to limit or measure", noLimitsEnv)
	}
}

type harness struct {
	*dtestutil.DriverHarness
	driver *Driver
	root   string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessWithConfig(t, testRoot(t), nil)
}

// testRoot is a fresh state root, removed after the test.
func testRoot(t *testing.T) string {
	root := filepath.Join("/run", "java-crun-test-"+uuid.Generate()[:8])
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	return root
}

func waitHealthy(t *testing.T, d *Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch, _ := d.Fingerprint(ctx)
	select {
	case fp := <-ch:
		if fp.Health != drivers.HealthStateHealthy {
			t.Fatalf("driver not healthy: %s", fp.HealthDescription)
		}
		// Every harness test runs its tasks from the small shim, as the lab's agents do.
		self, _ := os.Executable()
		want := filepath.Join(filepath.Dir(self), shim.BinaryDir, shim.BinaryName)
		if got, _ := fp.Attributes[AttrShim].GetString(); got != want {
			t.Fatalf("tasks start from %q, not the shim %s (plugin.test installs it there)", got, want)
		}
	case <-ctx.Done():
		t.Fatal("no fingerprint within 60s")
	}
}

// taskConfig builds a task running the lab JAR with args; the alloc dir is
// made by the harness and the JAR copied into local/.
func (h *harness) taskConfig(t *testing.T, jar string, memoryMB int64, jvm []string, args ...string) (*drivers.TaskConfig, func()) {
	t.Helper()
	allocID := uuid.Generate()
	cfg := &drivers.TaskConfig{
		ID:      allocID + "/main/" + uuid.Generate()[:8],
		AllocID: allocID,
		Name:    "main",
		User:    "root",
		// sleeper.jar's shutdown marker goes to the alloc dir's world-writable data/.
		Env: map[string]string{"SHUTDOWN_MARKER_DIR": "/alloc/data"},
		Resources: &drivers.Resources{
			NomadResources: &structs.AllocatedTaskResources{
				Memory: structs.AllocatedMemoryResources{MemoryMB: memoryMB},
				Cpu:    structs.AllocatedCpuResources{CpuShares: 250},
			},
			LinuxResources: &drivers.LinuxResources{CPUShares: 250},
		},
	}
	if os.Getenv(noLimitsEnv) == "1" {
		// A host whose cgroup v2 has no memory/cpu controllers (a private
		// cgroup2 mount on a hybrid host) can still run everything else.
		cfg.Resources.NomadResources.Memory.MemoryMB = 0
		cfg.Resources.NomadResources.Cpu.CpuShares = 0
		cfg.Resources.LinuxResources.CPUShares = 0
	}
	tc := &TaskConfig{JarPath: "local/" + jar, JVMOptions: jvm, Args: args}
	if err := cfg.EncodeConcreteDriverConfig(tc); err != nil {
		t.Fatal(err)
	}
	cleanup := h.MkAllocDir(cfg, true)
	src := filepath.Join(os.Getenv(jarsEnv), jar)
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("test JAR: %v", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.TaskDir().LocalDir, jar), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, cleanup
}

func (h *harness) start(t *testing.T, cfg *drivers.TaskConfig) *drivers.TaskHandle {
	t.Helper()
	began := time.Now()
	th, _, err := h.StartTask(cfg)
	if err != nil {
		t.Fatalf("StartTask: %v", err)
	}
	t.Logf("StartTask took %s", time.Since(began))
	// A failed test must not leave its container running.
	// Directly on the driver: the harness client is closed by then.
	t.Cleanup(func() { _ = h.driver.DestroyTask(cfg.ID, true) })
	return th
}

func (h *harness) wait(t *testing.T, id string, timeout time.Duration) *drivers.ExitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ch, err := h.WaitTask(ctx, id)
	if err != nil {
		t.Fatalf("WaitTask: %v", err)
	}
	select {
	case res := <-ch:
		if res == nil {
			t.Fatalf("WaitTask channel closed without a result")
		}
		return res
	case <-ctx.Done():
		t.Fatalf("task did not exit within %s", timeout)
	}
	return nil
}

// startSleeper starts sleeper.jar (runs until signalled) on a fresh harness.
func startSleeper(t *testing.T) (*harness, *drivers.TaskConfig, *drivers.TaskHandle) {
	t.Helper()
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	t.Cleanup(cleanup) // runs after start's forced destroy: cleanups are LIFO
	return h, cfg, h.start(t, cfg)
}

// destroyAndAssertGone destroys an exited task and checks nothing remains.
func (h *harness) destroyAndAssertGone(t *testing.T, cfg *drivers.TaskConfig) {
	t.Helper()
	if err := h.DestroyTask(cfg.ID, false); err != nil {
		t.Fatal(err)
	}
	h.assertGone(t, cfg)
}

// assertGone checks DestroyTask left nothing: no crun entry, bundle or cgroup.
func (h *harness) assertGone(t *testing.T, cfg *drivers.TaskConfig) {
	t.Helper()
	id := containerID(cfg)
	cli := &crun.CLI{Path: h.driver.runtime().CrunPath, Root: filepath.Join(h.root, "crun")}
	ids, err := cli.List(context.Background())
	if err != nil {
		t.Fatalf("crun list: %v", err)
	}
	for _, got := range ids {
		if got == id {
			t.Errorf("container %s still in crun list", id)
		}
	}
	for _, p := range []string{filepath.Join(h.root, "bundles", id), taskCgroup(cfg, id)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after DestroyTask", p)
		}
	}
}

func readLog(t *testing.T, cfg *drivers.TaskConfig, stream string) string {
	t.Helper()
	data, _ := os.ReadFile(filepath.Join(cfg.TaskDir().LogDir, cfg.Name+"."+stream+".0"))
	return string(data)
}

func TestHarnessHelloExitCodeAndLogs(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "hello.jar", 256, nil, "two words", "ünïcødé")
	defer cleanup()
	h.start(t, cfg)
	res := h.wait(t, cfg.ID, 2*time.Minute)
	if !res.Successful() {
		t.Fatalf("hello.jar: %+v", res)
	}
	waitFor(t, 10*time.Second, "hello done in stdout log", func() bool {
		return strings.Contains(readLog(t, cfg, "stdout"), "hello done")
	})
	out := readLog(t, cfg, "stdout")
	for _, want := range []string{"hello from java-crun", "arg[0]=two words", "arg[1]=ünïcødé", "cwd=/local"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if errOut := readLog(t, cfg, "stderr"); !strings.Contains(errOut, "hello on stderr") {
		t.Errorf("stderr: %q", errOut)
	}
	h.destroyAndAssertGone(t, cfg)
	// Over gRPC the sentinel arrives as its message.
	if _, err := h.InspectTask(cfg.ID); err == nil || !strings.Contains(err.Error(), drivers.ErrTaskNotFound.Error()) {
		t.Fatalf("InspectTask after destroy: %v", err)
	}
}

func TestHarnessExitCode(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "exitcode.jar", 256, nil, "7")
	defer cleanup()
	h.start(t, cfg)
	res := h.wait(t, cfg.ID, 2*time.Minute)
	if res.ExitCode != 7 || res.Err != nil || res.OOMKilled {
		t.Fatalf("exitcode.jar 7: %+v", res)
	}
	st, err := h.InspectTask(cfg.ID)
	if err != nil || st.State != drivers.TaskStateExited || st.ExitResult.ExitCode != 7 {
		t.Fatalf("InspectTask %+v %v", st, err)
	}
	_ = h.DestroyTask(cfg.ID, true)
	h.assertGone(t, cfg)
}

func TestHarnessStopRunsShutdownHook(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	if err := h.StopTask(cfg.ID, 30*time.Second, ""); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	res := h.wait(t, cfg.ID, time.Minute)
	if res.ExitCode != 143 || res.Signal != 15 {
		t.Fatalf("after SIGTERM: %+v (want exit 143)", res)
	}
	waitFor(t, 10*time.Second, "shutdown hook output", func() bool {
		return strings.Contains(readLog(t, cfg, "stdout"), "shutdown hook ran")
	})
	// The hook wrote its marker through the read-write /alloc mount.
	if _, err := os.Stat(filepath.Join(cfg.TaskDir().SharedAllocDir, "data", "shutdown-main")); err != nil {
		t.Errorf("shutdown marker in the alloc dir: %v", err)
	}
	h.destroyAndAssertGone(t, cfg)
}

// A stop that arrives while the JVM is still starting must still end
// gracefully: the JVM is PID 1 of its namespace, which drops SIGTERM until
// Java installs its handler, so the driver holds the signal until then.
func TestHarnessStopDuringJVMStartIsGraceful(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	const timeout = 30 * time.Second
	began := time.Now()
	if err := h.StopTask(cfg.ID, timeout, "SIGTERM"); err != nil {
		t.Fatalf("StopTask: %v", err)
	}
	res := h.wait(t, cfg.ID, time.Minute)
	t.Logf("stop right after StartTask took %s", time.Since(began))
	if res.ExitCode != 143 || res.Signal != 15 {
		t.Fatalf("stop during JVM start: %+v (want exit 143 from SIGTERM; 137 means the signal was lost and the driver fell back to SIGKILL)", res)
	}
	if took := time.Since(began); took >= timeout {
		t.Fatalf("graceful stop took %s, the whole kill timeout", took)
	}
	h.destroyAndAssertGone(t, cfg)
}

func TestHarnessSignalAndForceDestroy(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	if err := h.SignalTask(cfg.ID, "SIGBOGUS"); err == nil {
		t.Fatal("unknown signal accepted")
	}
	if err := h.DestroyTask(cfg.ID, false); err == nil {
		t.Fatal("DestroyTask without force removed a running task")
	}
	// SIGQUIT makes the JVM print a thread dump and go on running.
	if err := h.SignalTask(cfg.ID, "quit"); err != nil {
		t.Fatalf("SignalTask: %v", err)
	}
	waitFor(t, 20*time.Second, "thread dump after SIGQUIT", func() bool {
		return strings.Contains(readLog(t, cfg, "stdout"), "Full thread dump")
	})
	st, _ := h.InspectTask(cfg.ID)
	if st.State != drivers.TaskStateRunning {
		t.Fatalf("task stopped after SIGQUIT: %+v", st)
	}
	if err := h.DestroyTask(cfg.ID, true); err != nil {
		t.Fatalf("DestroyTask(force): %v", err)
	}
	if err := h.DestroyTask(cfg.ID, true); err != nil {
		t.Fatalf("second DestroyTask must be a no-op: %v", err)
	}
	h.assertGone(t, cfg)
}

func TestHarnessRecoverAfterPluginRestart(t *testing.T) {
	h, cfg, th := startSleeper(t)
	waitRunningJVM(t, h, cfg)

	// A new plugin process: fresh driver, same state root, handle from Nomad.
	h2 := newHarnessWithRoot(t, h.root)
	if err := h2.RecoverTask(th); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	st, err := h2.InspectTask(cfg.ID)
	if err != nil || st.State != drivers.TaskStateRunning {
		t.Fatalf("recovered task %+v %v", st, err)
	}
	if err := h2.StopTask(cfg.ID, 30*time.Second, "SIGTERM"); err != nil {
		t.Fatalf("StopTask after recovery: %v", err)
	}
	res := h2.wait(t, cfg.ID, time.Minute)
	if res.ExitCode != 143 {
		t.Fatalf("exit after recovery %+v, want the real code 143", res)
	}
	h2.destroyAndAssertGone(t, cfg)
}

func TestHarnessRecoverVanishedContainer(t *testing.T) {
	h, cfg, th := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	hd, _ := h.driver.tasks.Get(cfg.ID)
	// Simulate the worst case: container, its supervisor and its record gone.
	_ = hd.Kill(context.Background())
	_ = os.RemoveAll(hd.State.BundleDir)

	h2 := newHarnessWithRoot(t, h.root)
	err := h2.RecoverTask(th)
	if err == nil || !strings.Contains(err.Error(), "vanished") {
		t.Fatalf("RecoverTask of a vanished container: %v", err)
	}
	_ = h.DestroyTask(cfg.ID, true)
}

func TestHarnessOOMKilled(t *testing.T) {
	requireRuntime(t)
	requireLimits(t)
	h := newHarness(t)
	// Touch a 256 MiB heap at start-up inside a 64 MiB limit.
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 64, []string{"-Xms256m", "-Xmx256m", "-XX:+AlwaysPreTouch"})
	defer cleanup()
	events, err := h.TaskEvents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h.start(t, cfg)
	res := h.wait(t, cfg.ID, 2*time.Minute)
	if !res.OOMKilled || res.ExitCode != 137 {
		t.Fatalf("want OOMKilled and exit 137: %+v", res)
	}
	select {
	case ev := <-events:
		if !strings.Contains(ev.Message, "OOM") {
			t.Fatalf("event %q", ev.Message)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OOM task event")
	}
	_ = h.DestroyTask(cfg.ID, true)
	h.assertGone(t, cfg)
}

func TestHarnessStats(t *testing.T) {
	requireRuntime(t)
	requireLimits(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "sleeper.jar", 256, nil)
	defer cleanup()
	h.start(t, cfg)
	waitRunningJVM(t, h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.TaskStats(ctx, cfg.ID, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var last *drivers.TaskResourceUsage
	for i := 0; i < 3; i++ {
		select {
		case last = <-ch:
		case <-time.After(10 * time.Second):
			t.Fatal("no stats")
		}
	}
	if last.ResourceUsage.MemoryStats.Usage == 0 || last.ResourceUsage.MemoryStats.RSS == 0 {
		t.Fatalf("memory stats empty: %+v", last.ResourceUsage.MemoryStats)
	}
	_ = h.DestroyTask(cfg.ID, true)
	h.assertGone(t, cfg)
}

func TestHarnessInvalidJarIsUnrecoverable(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "hello.jar", 256, nil)
	defer cleanup()
	_ = os.WriteFile(filepath.Join(cfg.TaskDir().LocalDir, "hello.jar"), []byte("not a zip"), 0o644)
	_, _, err := h.StartTask(cfg)
	if err == nil || !strings.Contains(err.Error(), "local/hello.jar is not a valid JAR") {
		t.Fatalf("err %v", err)
	}
	if structs.IsRecoverable(err) {
		t.Fatal("an invalid JAR must not be retried")
	}
}

func newHarnessWithRoot(t *testing.T, root string) *harness {
	t.Helper()
	d := New(hclog.New(&hclog.LoggerOptions{Name: t.Name() + "-2", Level: hclog.Debug, Output: testWriter{t}})).(*Driver)
	h := &harness{DriverHarness: dtestutil.NewDriverHarness(t, d), driver: d, root: root}
	var data []byte
	_ = base.MsgPackEncode(&data, pluginConfigForTest(root))
	if err := h.SetConfig(&base.Config{PluginConfig: data, AgentConfig: &base.AgentConfig{Driver: &base.ClientDriverConfig{}}}); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, d)
	return h
}

// waitRunningJVM waits for sleeper.jar's start line, printed once its
// shutdown hook is registered.
func waitRunningJVM(t *testing.T, h *harness, cfg *drivers.TaskConfig) {
	t.Helper()
	waitFor(t, 2*time.Minute, "sleeper started", func() bool {
		return strings.Contains(readLog(t, cfg, "stdout"), "sleeper started")
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = testWriter{}

func pluginConfigForTest(root string) map[string]any {
	// The tests run their tasks as root (to read what root could read).
	cfg := map[string]any{"state_root": root, "fingerprint_period": "1s", "allow_root": true}
	if os.Getenv(noLimitsEnv) == "1" {
		cfg["pids_limit"] = 0
	}
	if p := os.Getenv(crunEnv); p != "" {
		cfg["crun_path"] = p
	}
	return cfg
}

func TestHarnessExecAndIsolation(t *testing.T) {
	h, cfg, _ := startSleeper(t)
	waitRunningJVM(t, h, cfg)
	run := func(argv ...string) (string, int) {
		t.Helper()
		res, err := h.ExecTask(cfg.ID, argv, 30*time.Second)
		if err != nil {
			t.Fatalf("exec %v: %v", argv, err)
		}
		return string(res.Stdout) + string(res.Stderr), res.ExitResult.ExitCode
	}
	if out, code := run("/bin/cat", "/proc/1/cmdline"); code != 0 || !strings.Contains(out, "sleeper.jar") {
		t.Fatalf("pid 1 is not the JVM: %q (exit %d)", out, code)
	}
	if out, code := run("/bin/pwd"); code != 0 || strings.TrimSpace(out) != "/local" {
		t.Errorf("cwd %q", out)
	}
	if _, code := run("/bin/touch", "/usr/x"); code == 0 {
		t.Error("/usr is writable in the container")
	}
	if _, code := run("/bin/touch", "/local/x", "/alloc/x", "/secrets/x", "/tmp/x"); code != 0 {
		t.Error("task dirs or /tmp not writable")
	}
	if _, code := run("/bin/sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"); code == 0 {
		t.Error("/proc/sys is writable")
	}
	if out, code := run("/bin/false"); code != 1 {
		t.Errorf("exit code of /bin/false: %d %q", code, out)
	}
}

func TestHarnessRecoverAfterExitWhilePluginDown(t *testing.T) {
	requireRuntime(t)
	h := newHarness(t)
	cfg, cleanup := h.taskConfig(t, "exitcode.jar", 256, nil, "3")
	defer cleanup()
	th := h.start(t, cfg)
	h.wait(t, cfg.ID, 2*time.Minute) // the container ends "while the new plugin is not there yet"

	h2 := newHarnessWithRoot(t, h.root)
	if err := h2.RecoverTask(th); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	if res := h2.wait(t, cfg.ID, 30*time.Second); res.ExitCode != 3 {
		t.Fatalf("recovered exit %+v, want the recorded code 3", res)
	}
	h2.destroyAndAssertGone(t, cfg)
}
