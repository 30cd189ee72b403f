package shim

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Wait statuses as the kernel encodes them: exit code C is C<<8, death by
// signal N is N.
func exited(code int) unix.WaitStatus  { return unix.WaitStatus(code << 8) }
func killedBy(sig int) unix.WaitStatus { return unix.WaitStatus(sig) }

func TestClassify(t *testing.T) {
	cases := []struct {
		name       string
		ws         unix.WaitStatus
		sent       []int
		code, sign int
	}{
		{"success", exited(0), nil, 0, 0},
		{"plain failure", exited(1), nil, 1, 0},
		{"app chose 143", exited(143), nil, 143, 0},
		{"app chose 137", exited(137), nil, 137, 0},
		{"app chose 192", exited(192), nil, 192, 0},
		{"app chose 143 after an unrelated SIGHUP", exited(143), []int{1}, 143, 0},
		{"JVM exits 143 on our SIGTERM", exited(143), []int{15}, 143, 15},
		{"JVM exits 130 on our SIGINT", exited(130), []int{2, 15}, 130, 2},
		{"killed by SIGKILL", killedBy(9), nil, 137, 9},
		{"killed by an unhandled SIGTERM", killedBy(15), []int{15}, 143, 15},
		{"killed by SIGSEGV", killedBy(11), nil, 139, 11},
		{"exit 255 is no signal (127 > 64)", exited(255), []int{127}, 255, 0},
		{"exit 200 is no signal", exited(200), []int{72}, 200, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, sig := Classify(c.ws, c.sent)
			if code != c.code || sig != c.sign {
				t.Fatalf("Classify = (%d, %d), want (%d, %d)", code, sig, c.code, c.sign)
			}
		})
	}
}
