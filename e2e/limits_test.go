package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// Each bound on what a binary or a process can make ngxprobe read has a
// flag, and an error over it names that flag (not a Go field).
func TestLimitFlags(t *testing.T) {
	nginxtest.RequireRoot(t)
	inst := nginxtest.Build(t, nginxtest.VariantO2)
	srv, base := startPlain(t, privateBinary(t, inst), 1, "")
	master := strconv.Itoa(srv.MasterPID())
	for _, c := range []struct {
		name string
		argv []string
		want string
	}{
		{"units", ngx("funcs", "--binary", inst.Binary, "--max-units", "10", "ngx_http_finalize_request"), "--max-units"},
		{"debug_info", ngx("funcs", "--binary", inst.Binary, "--max-debug-info", "1000", "ngx_http_finalize_request"), "--max-debug-info"},
		{"modules", ngx("run", "-p", master, "--max-modules", "2", "--duration", "1s"), "--max-modules"},
		{"mappings", ngx("run", "-p", master, "--max-mappings", "5", "--duration", "1s"), "--max-mappings"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := runProbe(t, c.argv...)
			checkNoPanic(t, p)
			if p.exitCode() != 1 || !strings.Contains(p.stderr.String(), c.want) || strings.Contains(p.stderr.String(), "OpenOptions") || strings.Contains(p.stderr.String(), "target.Max") {
				t.Errorf("exit %d; want 1 and an error naming %s, not a Go field: %s", p.exitCode(), c.want, p)
			}
		})
	}
	t.Run("frames", func(t *testing.T) {
		// A stack deeper than --max-frames is cut there, and says how to
		// unwind deeper.
		p := startProbe(t, "run", "-p", master, "-o", "json", "--max-frames", "3", "--probe", "ngx_http_finalize_request:rc,stack")
		checkServes(t, base)
		var ev stackEvent
		waitUntil(eventTimeout, func() bool {
			for _, e := range stackEvents(t, p) {
				if e.Stack != nil {
					ev = e
					return true
				}
			}
			return false
		})
		stopProbeOK(t, p)
		if ev.Stack == nil || len(ev.Stack.Frames) != 3 || !ev.Stack.Truncated || !strings.Contains(ev.Stack.Reason, "--max-frames") {
			t.Errorf("stack %+v: want 3 frames, truncated with a reason naming --max-frames", ev.Stack)
		}
	})
}
