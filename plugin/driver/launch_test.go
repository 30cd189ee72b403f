package driver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/nomad/structs"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/driver/task"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

// startWait runs waitRunning for a shim stand-in (cmd) over bundle, failing
// the test if it does not answer within 10 s.
func startWait(t *testing.T, bundle string, cmd *exec.Cmd) (int, error) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	h := task.NewHandle(task.State{ContainerID: "c1", BundleDir: bundle}, nil,
		&crun.CLI{Path: "/nonexistent/crun"}, cmd, hclog.NewNullLogger())
	type answer struct {
		pid int
		err error
	}
	got := make(chan answer, 1)
	go func() {
		pid, err := waitRunning(context.Background(), h, bundle, "c1")
		got <- answer{pid, err}
	}()
	select {
	case a := <-got:
		return a.pid, a.err
	case <-time.After(10 * time.Second):
		t.Fatal("waitRunning did not answer within 10 s")
		return 0, nil
	}
}

func TestWaitRunningAnswersWithThePidOnceTheShimRecordsTheStart(t *testing.T) {
	bundle := t.TempDir()
	go func() {
		time.Sleep(200 * time.Millisecond) // crun run --detach at work
		_ = os.WriteFile(filepath.Join(bundle, shim.StartedFile), []byte(`{"pid": 4242}`), 0o600)
	}()
	pid, err := startWait(t, bundle, exec.Command("sleep", "30"))
	if err != nil || pid != 4242 {
		t.Fatalf("pid %d, err %v; want the recorded pid 4242", pid, err)
	}
}

func TestWaitRunningReportsCrunsOwnFailureWhenTheShimEndsWithoutAStart(t *testing.T) {
	bundle := t.TempDir()
	exit := `{"exit_code": 1, "crun_error": "crun: mount /usr: Permission denied"}`
	if err := os.WriteFile(filepath.Join(bundle, shim.ExitFile), []byte(exit), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := startWait(t, bundle, exec.Command("true"))
	if err == nil || !strings.Contains(err.Error(), "crun: mount /usr: Permission denied") {
		t.Fatalf("err %v; want crun's own message", err)
	}
	if !structs.IsRecoverable(err) {
		t.Errorf("a crun failure is the node's problem (recoverable): %v", err)
	}
}
