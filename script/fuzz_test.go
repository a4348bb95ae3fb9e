package script_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// The fuzz targets run their seeds (testdata/fuzz/Fuzz*) in every `go
// test`; `go test -fuzz FuzzParse ./script/` explores further. Neither
// has a deadline: the parser is linear (TestParseLinear) and nesting is
// bounded, so an input that hangs is a bug for the fuzzer to report.

// fuzzLib is what `include "lib.ngxp"` reads in the fuzz targets; the
// main file includes itself as "fuzz.ngxp", anything else is missing.
const fuzzLib = "define conn = r->connection\nngx_http_terminate_request { print(conn->number) }\n"

func fuzzRead(main string) script.ReadFunc {
	return func(path string) ([]byte, error) {
		switch path {
		case "lib.ngxp":
			return []byte(fuzzLib), nil
		case "fuzz.ngxp":
			return []byte(main), nil
		}
		return noInclude(path)
	}
}

// checkParse asserts what any input must give: a script, or errors that
// each have a position in one of the files.
func checkParse(t *testing.T, src string) *script.Script {
	t.Helper()
	files := map[string]string{"fuzz.ngxp": src, "lib.ngxp": fuzzLib}
	s, err := script.ParseText("fuzz.ngxp", src, fuzzRead(src))
	if err != nil {
		if s != nil {
			t.Fatalf("a script and an error")
		}
		checkErrorList(t, err, files)
		// The first error ends a file: at most one per file, plus
		// one per include that cannot be read.
		if n := len(err.(script.ErrorList)); n > 2+strings.Count(src, "include") {
			t.Fatalf("%d errors", n)
		}
		for _, e := range err.(script.ErrorList) {
			if _, ok := files[e.Pos.File]; !ok && !errors.Is(e, script.ErrInclude) {
				t.Fatalf("error in an unknown file %q: %v", e.Pos.File, e)
			}
		}
		return nil
	}
	if s == nil {
		t.Fatalf("no script and no error")
	}
	for _, p := range s.Probes {
		if len(p.Points) == 0 {
			t.Fatalf("a probe without points")
		}
		for _, pt := range p.Points {
			pos := s.Files.Position(pt.At)
			if pos.Line < 1 || pos.Col < 1 || !strings.HasPrefix(pos.LineText[pos.Col-1:], pt.Text) {
				t.Fatalf("point %q at %v, line %q", pt.Text, pos, pos.LineText)
			}
		}
	}
	// Printed back, the script parses to the same tree.
	want := dumpScript(s)
	text := format(s)
	again, err := script.ParseText("again.ngxp", text, noInclude)
	if err != nil {
		t.Fatalf("the printed script does not parse:\n%s\n%v\nfrom:\n%q", text, err, src)
	}
	if got := dumpScript(again); got != want {
		t.Fatalf("round trip:\n%s\ngot:\n%s\nwant:\n%s", text, got, want)
	}
	return s
}

func FuzzParse(f *testing.F) {
	f.Add("ngx_http_finalize_request / rc == 499 / { print(rc) }")
	f.Fuzz(func(t *testing.T, src string) {
		checkParse(t, src)
	})
}

func FuzzCompile(f *testing.F) {
	bin, _ := nginx(f, nginxtest.VariantO2)
	f.Add("ngx_unix_recv%return / c->addr_text == \"127.0.0.1\" / { @bytes[c->number] = sum($retval) }")
	f.Fuzz(func(t *testing.T, src string) {
		s := checkParse(t, src)
		if s == nil {
			return
		}
		prog, err := script.Compile(symbols.NewImage(bin), s)
		if err != nil {
			if prog != nil {
				t.Fatalf("a program and an error")
			}
			// The only error without a position, and not in a list:
			// nothing to attach. (errors.As would find an *Error inside
			// a list too.)
			if one, ok := err.(*script.Error); ok {
				if len(s.Probes) != 0 || !strings.Contains(one.Msg, "the script has no probes") || !errors.Is(one, script.ErrResolve) {
					t.Fatalf("a lone error: %v", err)
				}
				return
			}
			checkErrorList(t, err, map[string]string{"fuzz.ngxp": src, "lib.ngxp": fuzzLib})
			return
		}
		checkProgram(t, bin, s, prog)
	})
}

// checkProgram asserts that a compiled program is consistent: a probe
// per instance, instances inside their functions.
func checkProgram(t *testing.T, bin *symbols.Binary, s *script.Script, prog *script.Program) {
	t.Helper()
	checkFormats(t, prog)
	points, instances := 0, 0
	for _, p := range s.Probes {
		points += len(p.Points)
	}
	if len(prog.Points) != points {
		t.Fatalf("%d points compiled, %d written", len(prog.Points), points)
	}
	for _, pt := range prog.Points {
		if len(pt.Instances) == 0 {
			t.Fatalf("%s: no instances", pt.Text)
		}
		for _, in := range pt.Instances {
			instances++
			fn := bin.Symbolize(in.Address)
			if fn == nil || fn.Symbol != in.Symbol || in.Address != fn.Address+in.Offset || in.FileOffset != fn.Offset+in.Offset {
				t.Fatalf("%s: instance %+v is not in %v", pt.Text, in, fn)
			}
			if in.Kind != "uprobe" && in.Kind != "uretprobe" {
				t.Fatalf("%s: kind %q", pt.Text, in.Kind)
			}
		}
	}
	if instances != len(prog.Probes) {
		t.Fatalf("%d instances, %d probes", instances, len(prog.Probes))
	}
	for _, a := range prog.Aggregations {
		if len(a.KeyNames) != len(a.ProbeKey) {
			t.Fatalf("@%s: %d key names, %d probe-key flags", a.Name, len(a.KeyNames), len(a.ProbeKey))
		}
	}
}

// TestFuzzHelpers checks the round-trip printer on a script with every
// construct, so that a printer bug is not taken for a parser bug.
func TestFuzzHelpers(t *testing.T) {
	src := `define d = !(a->b[2].c) && ((struct x **) y)->z != -9223372036854775808
f, g%return, h+0x10, x.c:3 / (5)->m == 'a' || "s\x01\"\n" == (-1)[3] || !!(unsigned long) -2 / {
	l = d || (t_t) q
	print(n = l, (a)->b /* c */)
	printf("%d\t\\%%\n", x)
	@[probe, a] = avg(b) @m = count()
	stack
}
`
	s := checkParse(t, src)
	if s == nil {
		t.Fatal("no script")
	}
	if got := format(s); !strings.Contains(got, `"s\x01\"\n"`) || !strings.Contains(got, "((struct x **) y)->z") {
		t.Errorf("format:\n%s", got)
	}
}
