package task

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins/drivers"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
	"github.com/nomad-lab/nomad-driver-java-crun/shim"
)

func recovered(t *testing.T, bundle string) *Handle {
	t.Helper()
	state := State{ContainerID: "c1", BundleDir: bundle, ShimPID: 0}
	cli := &crun.CLI{Path: "/nonexistent/crun", Root: t.TempDir()}
	h := RecoverHandle(state, &drivers.TaskConfig{ID: "a/t/1", Name: "t"}, cli, hclog.NewNullLogger())
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("handle did not finish")
	}
	return h
}

func TestRecoveredHandleReadsRecordedExit(t *testing.T) {
	bundle := t.TempDir()
	data := `{"exit_code": 137, "signal": 9, "oom_killed": true, "finished_at": "2026-01-01T00:00:00Z"}`
	if err := os.WriteFile(filepath.Join(bundle, shim.ExitFile), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	h := recovered(t, bundle)
	res := h.ExitResult()
	if res.ExitCode != 137 || res.Signal != 9 || !res.OOMKilled || res.Err != nil {
		t.Fatalf("result %+v", res)
	}
	st := h.Status()
	if st.State != drivers.TaskStateExited || st.ExitResult.ExitCode != 137 {
		t.Fatalf("status %+v", st)
	}
}

func TestRecoveredHandleReportsCrunError(t *testing.T) {
	bundle := t.TempDir()
	data := `{"exit_code": 1, "crun_error": "crun: executable file not found"}`
	_ = os.WriteFile(filepath.Join(bundle, shim.ExitFile), []byte(data), 0o600)
	res := recovered(t, bundle).ExitResult()
	if res.Err == nil || res.Err.Error() != "crun: executable file not found" {
		t.Fatalf("result %+v", res)
	}
}

func TestRecoveredHandleVanished(t *testing.T) {
	res := recovered(t, t.TempDir()).ExitResult()
	if res.Err == nil || !strings.Contains(res.Err.Error(), "vanished") {
		t.Fatalf("result %+v", res)
	}
}
