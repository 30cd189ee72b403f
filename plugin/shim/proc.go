package shim

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StartTicks returns the process's start time in clock ticks since boot
// (field 22 of /proc/PID/stat): with the pid it identifies one process,
// even after the pid is reused.
func StartTicks(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after its ')' are plain.
	s := string(data)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(s[end+1:])
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// Alive reports whether the process pid that started at ticks still runs
// (a zombie counts as gone).
func Alive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	got, err := StartTicks(pid)
	if err != nil || got != ticks {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	end := strings.LastIndexByte(s, ')')
	return !strings.HasPrefix(strings.TrimSpace(s[end+1:]), "Z")
}
