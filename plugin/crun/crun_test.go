package crun

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestErrorMessages(t *testing.T) {
	log := `{"msg": "cannot set memory limit", "level": "warning", "time": "x"}
{"msg": "executable file ` + "`java`" + ` not found in $PATH: No such file or directory", "level": "error", "time": "x"}
plain text before json parsing
`
	got := ErrorMessages([]byte(log))
	want := []string{"executable file `java` not found in $PATH: No such file or directory", "plain text before json parsing"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if ReadErrorMessages("/nonexistent/log") != nil {
		t.Fatal("missing log must have no messages")
	}
	e := &Error{Msg: got[0]}
	if e.Error() != "crun: "+got[0] {
		t.Fatal(e.Error())
	}
}

func TestWriteBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	spec := BuildSpec(SpecInput{Args: []string{"/bin/true"}, Cwd: "/", NoFile: 1024, PidsLimit: 10, MemoryLimit: 1 << 20})
	if err := WriteBundle(dir, spec); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "rootfs")); err != nil || !fi.IsDir() {
		t.Fatal("rootfs missing")
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back specs.Spec
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back.Version != OCIVersion || back.Process.Args[0] != "/bin/true" || *back.Linux.Resources.Pids.Limit != 10 {
		t.Fatalf("round trip lost data: %+v", back.Process)
	}
}

func TestBuildSpecRootGetsCapabilities(t *testing.T) {
	s := BuildSpec(SpecInput{UID: 0})
	if !slices.Equal(s.Process.Capabilities.Effective, DefaultCapabilities) {
		t.Fatal("root task should have the default capabilities effective")
	}
	if s.Linux.Resources.Devices[0].Allow {
		t.Fatal("device cgroup must deny by default")
	}
}
