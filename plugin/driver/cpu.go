package driver

import (
	"fmt"
	"strconv"
	"strings"
)

// The kernel's cpu.shares range (crun maps shares to cgroup v2's
// cpu.weight, 1..10000, as 1 + (shares-2)*9999/262142): a value outside
// it makes crun fail the start ("Numerical result out of range"), and the
// task loops on restarts.
const (
	minCPUShares = 2
	maxCPUShares = 262144
)

// cpuShares fits the task's cpu (MHz, Nomad's shares) into the kernel's
// range. As Nomad's exec driver does, on a node whose total compute exceeds
// the range the value is scaled (keeping tasks' proportions), else clamped;
// note says what changed, for a task event ("" when nothing did).
func cpuShares(requested, totalCompute int64) (uint64, string) {
	switch {
	case requested <= 0:
		return 0, "" // no cpu given: crun leaves the weight at its default
	case requested < minCPUShares:
		return minCPUShares, fmt.Sprintf("cpu %d is below the kernel's minimum of %d shares: using %d", requested, minCPUShares, minCPUShares)
	case totalCompute >= maxCPUShares:
		scaled := max(int64(float64(requested)/float64(totalCompute)*maxCPUShares), minCPUShares)
		if scaled == requested {
			return uint64(requested), ""
		}
		return uint64(scaled), fmt.Sprintf("cpu %d scaled to %d shares: the node's total compute %d MHz exceeds the kernel's range of %d shares", requested, scaled, totalCompute, maxCPUShares)
	case requested > maxCPUShares:
		return maxCPUShares, fmt.Sprintf("cpu %d is above the kernel's maximum of %d shares (cpu.weight 10000): using %d", requested, maxCPUShares, maxCPUShares)
	}
	return uint64(requested), ""
}

// validCpuset checks Nomad's reserved cores ("1", "0,2", "0-3"): crun would
// otherwise fail the start with a less helpful message.
func validCpuset(s string) error {
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if _, err := strconv.ParseUint(lo, 10, 16); err != nil {
			return fmt.Errorf("reserved cores %q: %q is not a core number", s, part)
		}
		if isRange {
			if _, err := strconv.ParseUint(hi, 10, 16); err != nil {
				return fmt.Errorf("reserved cores %q: %q is not a core range", s, part)
			}
		}
	}
	return nil
}
