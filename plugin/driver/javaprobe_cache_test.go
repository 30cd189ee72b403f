package driver

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCachedJavaVersionProbesOncePerInstallState(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	probe := func(context.Context, string) (string, error) {
		calls++
		return `openjdk version "17.0.19"`, nil
	}
	key := "v1"
	now := time.Now()
	cached := cachedJavaVersion(dir, probe, func(string) string { return key }, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		if v, err := cached(context.Background(), "/jdk/bin/java"); err != nil || v != `openjdk version "17.0.19"` {
			t.Fatalf("probe %d: %q, %v", i, v, err)
		}
	}
	if calls != 1 {
		t.Fatalf("an unchanged install was probed %d times, want 1", calls)
	}
	key = "v2" // a library moved aside, the launcher replaced...
	if _, err := cached(context.Background(), "/jdk/bin/java"); err != nil || calls != 2 {
		t.Fatalf("a changed install must be probed again: calls=%d err=%v", calls, err)
	}
	now = now.Add(javaProbeCacheTTL + time.Second)
	if _, err := cached(context.Background(), "/jdk/bin/java"); err != nil || calls != 3 {
		t.Fatalf("an expired probe must be run again: calls=%d err=%v", calls, err)
	}
}

func TestCachedJavaVersionNeverCachesAFailure(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	probe := func(context.Context, string) (string, error) {
		calls++
		return "", errors.New("Error: could not find libjava.so")
	}
	cached := cachedJavaVersion(dir, probe, func(string) string { return "k" }, time.Now)
	for i := 0; i < 2; i++ {
		if _, err := cached(context.Background(), "/jdk/bin/java"); err == nil {
			t.Fatal("a broken java must stay broken")
		}
	}
	if calls != 2 {
		t.Fatalf("a failed probe was cached: %d calls, want 2", calls)
	}
}
