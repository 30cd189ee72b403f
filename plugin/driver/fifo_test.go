package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOpenFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openFIFO(path, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "log collector") {
		t.Fatalf("no reader: err = %v", err)
	}
	reader, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	w, err := openFIFO(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Inspect the raw fd: File.Fd() would itself switch it to blocking.
	var flags int
	rc, _ := w.SyscallConn()
	_ = rc.Control(func(fd uintptr) { flags, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if flags&unix.O_NONBLOCK != 0 {
		t.Fatal("the FIFO handed to the container must be blocking")
	}
	if dn, err := openFIFO("", time.Second); err != nil || dn.Name() != os.DevNull {
		t.Fatalf("no path: %v", err)
	}
}
