package driver

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/nomad/plugins/drivers"
	"golang.org/x/sys/unix"

	"github.com/nomad-lab/nomad-driver-java-crun/crun"
)

// A TTY exec (`nomad alloc exec -t`): `crun exec --tty --console-socket S`
// makes the pseudo-terminal inside the container, sends its master to the
// unix socket S (SCM_RIGHTS) and waits for the process. The driver relays
// Nomad's stdin to the master, the master to Nomad's stdout (a terminal
// merges stdout and stderr), and Nomad's resize events to TIOCSWINSZ on the
// master.

// ttyDrain is how long a TTY exec reads the terminal after its command
// ended: output already written is in the pty's buffer.
const ttyDrain = 250 * time.Millisecond

type ttySession struct {
	dir        string
	socketPath string
	ln         *net.UnixListener
}

// listenConsole opens the console socket in a short private directory
// (a unix socket path must fit in 108 bytes; bundle paths may not).
func listenConsole() (*ttySession, error) {
	dir, err := os.MkdirTemp("", "java-crun-tty-")
	if err != nil {
		return nil, fmt.Errorf("exec tty: %w", err)
	}
	p := filepath.Join(dir, "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("exec tty: console socket: %w", err)
	}
	return &ttySession{dir: dir, socketPath: p, ln: ln}, nil
}

func (s *ttySession) close() {
	s.ln.Close()
	os.RemoveAll(s.dir)
}

// run starts crun, receives the pty master and relays until the command
// ends; it returns the command's exit code.
func (s *ttySession) run(ctx context.Context, cmd *exec.Cmd, opts *drivers.ExecOptions, logPath string, crunDeadline time.Duration) (int, error) {
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("exec: %w", err)
	}
	waitCh := make(chan error, 1)
	go func() { waitCh <- cmd.Wait() }()

	masterCh := make(chan *os.File, 1)
	recvErr := make(chan error, 1)
	go func() {
		_ = s.ln.SetDeadline(time.Now().Add(crunDeadline))
		f, err := acceptMaster(s.ln)
		if err != nil {
			recvErr <- err
			return
		}
		masterCh <- f
	}()

	var master *os.File
	select {
	case master = <-masterCh:
	case err := <-recvErr:
		_ = cmd.Process.Kill()
		<-waitCh
		msg := strings.Join(crun.ReadErrorMessages(logPath), "; ")
		return 0, fmt.Errorf("exec tty: crun sent no terminal to %s within %s (%v) %s", s.socketPath, crunDeadline, err, msg)
	case werr := <-waitCh: // crun failed before it sent the terminal
		return execResult(werr, logPath, opts.Command)
	}
	defer master.Close()

	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		// Ends with EIO once the last holder of the terminal's slave side
		// (the command) has exited.
		_, _ = io.Copy(writerOrDiscard(opts.Stdout), master)
	}()
	if opts.Stdin != nil {
		go func() { _, _ = io.Copy(master, opts.Stdin) }()
		defer func() { _ = opts.Stdin.Close() }()
	}
	stopResize := make(chan struct{})
	defer close(stopResize)
	go relayResize(master, opts.ResizeCh, stopResize)

	werr := <-waitCh
	// Like `docker exec -it`, the session follows the lead process: drain
	// what it wrote, but do not wait for background children that still
	// hold the terminal.
	_ = master.SetReadDeadline(time.Now().Add(ttyDrain))
	<-outDone
	return execResult(werr, logPath, opts.Command)
}

// acceptMaster takes crun's connection and the file descriptor it carries.
func acceptMaster(ln *net.UnixListener) (*os.File, error) {
	conn, err := ln.AcceptUnix()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read console socket: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("console socket: no control message (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) == 0 {
		return nil, fmt.Errorf("console socket: no file descriptor (%v)", err)
	}
	for _, extra := range fds[1:] {
		unix.Close(extra)
	}
	// Non-blocking, so that Go's poller runs the reads and Close ends them.
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	return os.NewFile(uintptr(fds[0]), "pty-master"), nil
}

// relayResize applies Nomad's terminal size events to the pty.
func relayResize(master *os.File, sizes <-chan drivers.TerminalSize, stop <-chan struct{}) {
	if sizes == nil {
		return
	}
	for {
		select {
		case <-stop:
			return
		case sz, ok := <-sizes:
			if !ok {
				return
			}
			ws := &unix.Winsize{Row: uint16(sz.Height), Col: uint16(sz.Width)}
			rc, err := master.SyscallConn()
			if err != nil {
				return
			}
			_ = rc.Control(func(fd uintptr) { _ = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) })
		}
	}
}
