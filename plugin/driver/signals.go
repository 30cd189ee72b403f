package driver

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseSignal normalises a signal given as "SIGTERM", "term", "Term" or
// "15" to crun's canonical upper-case "SIGTERM" and its number. Unknown
// names are rejected here because crun 1.8.1 silently sends signal 0 for them.
func ParseSignal(s string) (string, unix.Signal, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return "", 0, fmt.Errorf("empty signal name: use a name such as SIGTERM or a number such as 15")
	}
	if n, err := strconv.Atoi(in); err == nil {
		sig := unix.Signal(n)
		name := unix.SignalName(sig)
		if name == "" {
			return "", 0, fmt.Errorf("unknown signal number %d: use 1-31 or a name such as SIGTERM", n)
		}
		return name, sig, nil
	}
	name := strings.ToUpper(in)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return "", 0, fmt.Errorf("unknown signal %q: use a name such as SIGTERM, SIGHUP, SIGUSR1 or a number", s)
	}
	// SignalName gives one canonical name per number (e.g. SIGIOT -> SIGABRT).
	return unix.SignalName(sig), sig, nil
}
