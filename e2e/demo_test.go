package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// demoSection matches a section header of the demo: "== 5. What ...".
var demoSection = regexp.MustCompile(`(?m)^== (\d)\. `)

// TestDemo runs `make demo` as a user would and reads its output as they
// would: sections 1 to 7 in order, nothing (no build output) before the
// first, ngxprobe's attach line before its events and its exit summary
// after them, and the client's side told in words, not as a Go error.
func TestDemo(t *testing.T) {
	nginxtest.RequireRoot(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	nginxtest.Build(t, nginxtest.VariantO2) // cached: the demo then builds nothing
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-s", "--no-print-directory", "demo")
	cmd.Dir = root
	cmd.Env = append(childEnv(), "MAKEFLAGS=", "MAKELEVEL=")
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	if first := strings.TrimLeft(out, "\n"); !strings.HasPrefix(first, "== 1. ") {
		t.Errorf("output before the first section:\n%s", out[:min(len(out), 2000)])
	}
	var got []string
	for _, m := range demoSection.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1])
	}
	if strings.Join(got, "") != "1234567" {
		t.Errorf("sections %v, want 1 to 7 in order:\n%s", got, out)
	}
	five := out[strings.Index(out, "== 5. "):strings.Index(out, "== 6. ")]
	attached := strings.Index(five, "ngxprobe: attached")
	event := strings.Index(five, " ngx_http_finalize_request pid ")
	detached := strings.Index(five, "ngxprobe: detached")
	if attached < 0 || event < 0 || detached < 0 || !(attached < event && event < detached) {
		t.Errorf("section 5: attach line at %d, first event at %d, exit summary at %d; want them in that order:\n%s", attached, event, detached, five)
	}
	four := out[strings.Index(out, "== 4. "):strings.Index(out, "== 5. ")]
	if strings.Contains(four, "context deadline exceeded") || !strings.Contains(four, "gave up after 1 s") {
		t.Errorf("section 4 does not say what the client did in words:\n%s", four)
	}
}
