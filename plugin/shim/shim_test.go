package shim

import (
	"errors"
	"os"
	"testing"
	"time"
)

func TestParseOOMKills(t *testing.T) {
	data := []byte("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
	if n := ParseOOMKills(data); n != 2 {
		t.Fatalf("got %d", n)
	}
	if n := ParseOOMKills([]byte("")); n != 0 {
		t.Fatalf("got %d", n)
	}
}

func TestAliveIdentifiesProcess(t *testing.T) {
	ticks, err := StartTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(os.Getpid(), ticks) {
		t.Fatal("self not alive")
	}
	if Alive(os.Getpid(), ticks+1) {
		t.Fatal("a reused pid must not count as alive")
	}
	if Alive(0, 0) || Alive(1<<22+1, 0) {
		t.Fatal("nonexistent pid alive")
	}
}

func TestExitFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadExit(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err %v, want not exist", err)
	}
	want := &Exit{ExitCode: 137, Signal: 9, OOMKilled: true, FinishedAt: time.Now().UTC().Truncate(time.Second)}
	if err := writeJSON(dir+"/"+ExitFile, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadExit(dir)
	if err != nil || *got != *want {
		t.Fatalf("got %+v %v", got, err)
	}
	cfg := &Config{CrunPath: "/usr/bin/crun", CrunRoot: "/run/x", ContainerID: "c", Bundle: dir}
	if err := WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	back, err := ReadConfig(dir)
	if err != nil || *back != *cfg {
		t.Fatalf("got %+v %v", back, err)
	}
}
