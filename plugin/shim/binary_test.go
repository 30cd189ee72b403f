package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeShim writes an executable that prints line for --version.
func fakeShim(t *testing.T, path, line string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho '"+line+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindBinaryPrefersTheShimBesideTheDriverFromTheSameBuild(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "nomad-driver-java-crun")
	beside := filepath.Join(dir, BinaryDir, BinaryName)
	fakeShim(t, beside, VersionLine("v1 (commit abc)"))
	bin, err := FindBinary(context.Background(), "", self, "v1 (commit abc)")
	if err != nil || bin.Path != beside || bin.Fallback {
		t.Fatalf("got %+v, %v; want %s", bin, err, beside)
	}
}

func TestFindBinaryFallsBackToTheDriverWhenNoShimIsInstalled(t *testing.T) {
	self := filepath.Join(t.TempDir(), "nomad-driver-java-crun")
	bin, err := FindBinary(context.Background(), "", self, "v1")
	if err != nil || bin.Path != self || !bin.Fallback {
		t.Fatalf("got %+v, %v; want the driver itself as a fallback", bin, err)
	}
}

func TestFindBinaryRefusesAShimOfAnotherBuildNamingBoth(t *testing.T) {
	dir := t.TempDir()
	beside := filepath.Join(dir, BinaryDir, BinaryName)
	fakeShim(t, beside, VersionLine("v1 (commit old)"))
	_, err := FindBinary(context.Background(), "", filepath.Join(dir, "driver"), "v1 (commit new)")
	if err == nil || !strings.Contains(err.Error(), "commit old") || !strings.Contains(err.Error(), "commit new") ||
		!strings.Contains(err.Error(), "one build") {
		t.Fatalf("err %v", err)
	}
}

func TestFindBinaryChecksAConfiguredPath(t *testing.T) {
	dir := t.TempDir()
	if _, err := FindBinary(context.Background(), "java-crun-shim", "/x", "v1"); err == nil ||
		!strings.Contains(err.Error(), "must be an absolute path") {
		t.Fatalf("relative path: err %v", err)
	}
	missing := filepath.Join(dir, "nope")
	if _, err := FindBinary(context.Background(), missing, "/x", "v1"); err == nil ||
		!strings.Contains(err.Error(), "shim_path "+missing+" is not runnable") {
		t.Fatalf("missing file: err %v", err)
	}
	good := filepath.Join(dir, "shim")
	fakeShim(t, good, VersionLine("v1"))
	if bin, err := FindBinary(context.Background(), good, "/x", "v1"); err != nil || bin.Path != good || bin.Fallback {
		t.Fatalf("got %+v, %v", bin, err)
	}
}
