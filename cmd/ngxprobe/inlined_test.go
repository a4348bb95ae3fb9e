package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// check lists an entry probe's inlined copies with the call each comes
// from, names an argument a copy cannot read with the reason, and says
// which copies a return probe misses; funcs lists the copies too, and
// --names the functions that only have inlined copies.
func TestInlinedCopiesOutput(t *testing.T) {
	nginxtest.RequireRoot(t)
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			inst := nginxtest.Build(t, variant)
			out, errOut, code := ngx("check", "--binary", inst.Binary, "-e", "ngx_http_finalize_connection { print(r->connection->number) }\nngx_http_close_request%return { }\n")
			if code != 0 {
				t.Fatalf("check: exit %d: %s", code, errOut)
			}
			for _, re := range []string{
				`(?m)^-e:1:1  ngx_http_finalize_connection\n    uprobe    ngx_http_finalize_connection\.part\.0 +addr 0x[0-9a-f]+  file offset 0x[0-9a-f]+\n`,
				`(?m)^    uprobe    ngx_http_finalize_request\+0x[0-9a-f]+ \(ngx_http_finalize_connection inlined into ngx_http_finalize_request at ngx_http_request\.c:2708\) addr 0x[0-9a-f]+  file offset 0x[0-9a-f]+\n    uprobe`,
				`(?m)^    uprobe    ngx_http_finalize_request\+0x[0-9a-f]+ \(ngx_http_finalize_connection inlined into ngx_http_finalize_request at ngx_http_request\.c:2539\) addr 0x[0-9a-f]+  file offset 0x[0-9a-f]+\n      note: r is unavailable here \(optimized out \(no DW_AT_location\)\): values using it print as unavailable`,
				`(?m)^-e:2:1  ngx_http_close_request%return\n    uretprobe ngx_http_close_request\.isra\.0 +addr 0x[0-9a-f]+  file offset 0x[0-9a-f]+\n    note: 1 inlined copies of ngx_http_close_request are not covered: .*a FILE:LINE probe`,
				`: 2 probe points, 4 attach points,`,
			} {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("check output does not match %s:\n%s", re, out)
				}
			}

			out, _, code = ngx("funcs", "--binary", inst.Binary, "ngx_http_close_request")
			if code != 0 || !regexp.MustCompile(`(?m)^ngx_http_close_request\tngx_http_terminate_handler\+0x[0-9a-f]+\t0x[0-9a-f]+\t\(ngx_http_request_t \* r@rbx, ngx_int_t rc@const 0\)\tnginx\tinlined into ngx_http_terminate_handler at src/http/ngx_http_request\.c:2770$`).MatchString(out) {
				t.Errorf("funcs ngx_http_close_request: exit %d, no inlined copy in ngx_http_terminate_handler:\n%s", code, out)
			}
			out, _, code = ngx("funcs", "--names", "--binary", inst.Binary, "ngx_event_del")
			if code != 0 || !strings.Contains(out, "ngx_event_del_timer\n") {
				t.Errorf("funcs --names ngx_event_del: exit %d, no ngx_event_del_timer (only inlined copies):\n%s", code, out)
			}
		})
	}
}
