package symbols_test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// CallsTo finds the calls and tail jumps objdump shows from one function
// to another: here where nginx ends a websocket tunnel, the calls from
// ngx_http_upstream_process_upgraded to ngx_http_upstream_finalize_request
// (one shared tail jump on both test builds), and ngx_http_finalize_request's
// calls to ngx_http_terminate_request.
func TestCallsToMatchesObjdump(t *testing.T) {
	pairs := [][2]string{
		{"ngx_http_upstream_process_upgraded", "ngx_http_upstream_finalize_request"},
		{"ngx_http_finalize_request", "ngx_http_terminate_request"},
	}
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			path := nginxtest.Build(t, variant).Binary
			b := openBinary(t, path)
			for _, pair := range pairs {
				callers, err := b.Lookup(pair[0])
				if err != nil {
					t.Fatal(err)
				}
				callees, err := b.Lookup(pair[1])
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, fn := range callers {
					sites, err := symbols.CallsTo(fn, callees)
					if err != nil {
						t.Fatal(err)
					}
					for _, s := range sites {
						got = append(got, fmt.Sprintf("%x %v", s.At, s.Tail))
					}
				}
				var want []string
				for _, fn := range callers {
					want = append(want, objdumpCalls(t, path, fn, pair[1])...)
				}
				if len(want) == 0 || strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("%s → %s: CallsTo %v, objdump %v", pair[0], pair[1], got, want)
				}
				t.Logf("%s → %s: %v", pair[0], pair[1], got)
			}
		})
	}
}

// objdumpCalls lists "ADDR TAIL" for fn's direct calls and jumps to any
// symbol named callee (clone suffixes included), as objdump decodes them.
func objdumpCalls(t *testing.T, path string, fn *symbols.Function, callee string) []string {
	t.Helper()
	out, err := exec.Command("objdump", "-d", "--no-show-raw-insn", fmt.Sprintf("--start-address=%#x", fn.Address),
		fmt.Sprintf("--stop-address=%#x", fn.Address+fn.Size), path).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	re := regexp.MustCompile(`^\s*([0-9a-f]+):\s+(call|jmp)\s+[0-9a-f]+ <` + regexp.QuoteMeta(callee) + `(\.[a-z_]+\.[0-9]+)*>$`)
	var calls []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			calls = append(calls, fmt.Sprintf("%s %v", m[1], m[2] == "jmp"))
		}
	}
	return calls
}
