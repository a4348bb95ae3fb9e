// Package testenv decides whether a test that needs the real machine may
// skip: locally it skips with the reason; in CI (CI=true) it fails, so a
// missing prerequisite can never pass as green.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI.
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips the test, or fails it in CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true, so this cannot skip: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot needs euid 0 (uprobes and BPF).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root (CAP_BPF and CAP_PERFMON)")
	}
}
