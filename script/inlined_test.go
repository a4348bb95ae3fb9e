package script_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestCheckInlinedCopies: an entry probe attaches to the function's
// inlined copies besides its out-of-line instances, each reading the
// copy's own arguments; an argument a copy lost is a note on that copy,
// not an error, and its values read nothing; a return probe says which
// copies it misses; a clone's exact name names that instance alone.
//
// In both test builds ngx_http_finalize_connection is inlined twice into
// ngx_http_finalize_request: at line 2708 with r in a register, at line
// 2539 (rc == NGX_DONE) with r optimized out; ngx_http_close_request
// once into ngx_http_terminate_handler, whose call passes rc = 0.
func TestCheckInlinedCopies(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, _ := nginx(t, variant)
			var clone string
			fns, err := bin.Lookup("ngx_http_close_request")
			if err != nil {
				t.Fatal(err)
			}
			for _, fn := range fns {
				if fn.IsClone() {
					clone = fn.Symbol
				}
			}
			if clone == "" {
				t.Fatalf("ngx_http_close_request has no clone: %v", fns)
			}
			src := fmt.Sprintf(`ngx_http_finalize_connection / r->connection->number > 0 / {
    print(r->connection->number)
    @n[r->main->count] = count()
}
ngx_http_close_request { print(r->connection->number, rc) }
ngx_http_close_request%%return { }
%s { }
ngx_http_finalize_connection { stack }
`, clone)
			prog := mustCompile(t, bin, src)
			if len(prog.Points) != 5 {
				t.Fatalf("%d points", len(prog.Points))
			}
			probeAt := map[uint64][]*probes.Probe{}
			for _, p := range prog.Probes {
				probeAt[p.Function.Address+p.At] = append(probeAt[p.Function.Address+p.At], p)
			}

			// ngx_http_finalize_connection: its .part.0 instance and
			// two copies.
			fin := prog.Points[0]
			copies := inlinedOf(fin)
			if len(fin.Instances) != 3 || len(copies) != 2 {
				t.Fatalf("%s: %d instances, %d of them inlined copies; want 3 and 2: %+v", fin.Text, len(fin.Instances), len(copies), fin.Instances)
			}
			kept, lost := copies[0], copies[1]
			if !strings.HasSuffix(kept.Inlined, "at ngx_http_request.c:2708") {
				kept, lost = lost, kept
			}
			for _, c := range []struct {
				in   script.Instance
				line int
			}{{kept, 2708}, {lost, 2539}} {
				want := fmt.Sprintf("ngx_http_finalize_connection inlined into ngx_http_finalize_request at ngx_http_request.c:%d", c.line)
				fn := bin.Symbolize(c.in.Address)
				if c.in.Inlined != want || c.in.Kind != "uprobe" || fn == nil || fn.Symbol != c.in.Symbol || c.in.Symbol != "ngx_http_finalize_request" ||
					c.in.Offset == 0 || c.in.Address != fn.Address+c.in.Offset || c.in.FileOffset != fn.Offset+c.in.Offset {
					t.Errorf("copy %+v, want %q inside ngx_http_finalize_request (%+v)", c.in, want, fn)
				}
			}
			if len(kept.Notes) != 0 {
				t.Errorf("the copy at line 2708 has r in a register, but notes %q", kept.Notes)
			}
			if len(lost.Notes) != 1 || !strings.HasPrefix(lost.Notes[0], "r is unavailable here (optimized out") || !strings.Contains(lost.Notes[0], "print as unavailable") {
				t.Errorf("the copy at line 2539: notes %q, want one saying r is optimized out", lost.Notes)
			}
			// Its probe attaches all the same, and reads nothing of r:
			// value, filter and aggregation key.
			ps := probeAt[lost.Address]
			if len(ps) != 2 {
				t.Fatalf("%d probes at %#x, want 2", len(ps), lost.Address)
			}
			p := ps[0]
			if len(p.Values) != 1 || p.Values[0].Root.Unavailable == "" || !strings.Contains(p.Values[0].Root.Unavailable, "parameter r of ngx_http_finalize_connection inlined into ngx_http_finalize_request") {
				t.Errorf("value at the copy that lost r: %+v", p.Values)
			}
			if cmp, ok := p.Filter.(probes.Compare); !ok || cmp.L.Plan == nil || cmp.L.Plan.Root.Unavailable == "" {
				t.Errorf("filter at the copy that lost r: %#v", p.Filter)
			}
			if len(p.Aggregates) != 1 || p.Aggregates[0].Keys[0].Root.Unavailable == "" {
				t.Errorf("aggregation key at the copy that lost r: %+v", p.Aggregates)
			}
			if p.Inlined != lost.Inlined || len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "r is unavailable at "+lost.Inlined) {
				t.Errorf("probe at the copy: inlined %q, notes %q", p.Inlined, p.Notes)
			}
			// The other copy reads r where the symbols package finds it.
			ins, err := bin.InlinedInstances("ngx_http_finalize_connection")
			if err != nil {
				t.Fatal(err)
			}
			var r symbols.Param
			for _, in := range ins {
				if in.Address == kept.Address {
					r = in.Params[0]
				}
			}
			p = probeAt[kept.Address][0]
			if r.Err != nil || r.Location.Kind != symbols.InRegister || p.Values[0].Root.Unavailable != "" || p.Values[0].Root.Reg != r.Location.Reg || len(p.Notes) != 0 {
				t.Errorf("value at the copy that kept r: %+v, want a read from r in %v", p.Values[0], r.Location)
			}
			// A probe that reads nothing has no notes.
			if ps := probeAt[lost.Address]; !ps[1].Stack || len(ps[1].Notes) != 0 {
				t.Errorf("the stack probe at the copy: stack %v, notes %q", ps[1].Stack, ps[1].Notes)
			}

			// ngx_http_close_request: the clone and the copy in
			// ngx_http_terminate_handler, where rc is the constant 0.
			cl := prog.Points[1]
			copies = inlinedOf(cl)
			if len(cl.Instances) != 2 || len(copies) != 1 || cl.Instances[0].Symbol != clone {
				t.Fatalf("%s: instances %+v", cl.Text, cl.Instances)
			}
			if c := copies[0]; c.Symbol != "ngx_http_terminate_handler" || c.Inlined != "ngx_http_close_request inlined into ngx_http_terminate_handler at ngx_http_request.c:2770" || len(c.Notes) != 0 {
				t.Errorf("copy of ngx_http_close_request: %+v", c)
			}
			p = probeAt[copies[0].Address][0]
			if len(p.Values) != 2 || p.Values[0].Root.Unavailable != "" || len(p.Values[0].Loads) != 1 || !p.Values[1].Root.Const || p.Values[1].Root.Add != 0 {
				t.Errorf("values at the copy of ngx_http_close_request: %+v %+v", p.Values[0], p.Values[1])
			}

			// A return probe: the clone only, and a note on the copy.
			ret := prog.Points[2]
			if len(ret.Instances) != 1 || ret.Instances[0].Kind != "uretprobe" || ret.Instances[0].Symbol != clone {
				t.Errorf("%s: instances %+v", ret.Text, ret.Instances)
			}
			if len(ret.Notes) != 1 || !strings.HasPrefix(ret.Notes[0], "1 inlined copies of ngx_http_close_request are not covered: an inlined copy has no return instruction to probe") ||
				!strings.Contains(ret.Notes[0], "inlined into ngx_http_terminate_handler") || !strings.Contains(ret.Notes[0], "a FILE:LINE probe in its body reaches every copy, e.g. a line after src/http/ngx_http_request.c:3667") {
				t.Errorf("%s: notes %q", ret.Text, ret.Notes)
			}

			// The clone's name: that instance, no copy.
			if c := prog.Points[3]; len(c.Instances) != 1 || c.Instances[0].Symbol != clone || c.Instances[0].InlinedCopy || len(c.Notes) != 0 {
				t.Errorf("%s: instances %+v, notes %q", c.Text, c.Instances, c.Notes)
			}
			if st := prog.Points[4]; len(st.Instances) != 3 {
				t.Errorf("%s: %d instances, want 3", st.Text, len(st.Instances))
			}
		})
	}
}

func inlinedOf(a script.Attachment) []script.Instance {
	var out []script.Instance
	for _, in := range a.Instances {
		if in.InlinedCopy {
			out = append(out, in)
		}
	}
	return out
}

// TestCheckInlinedSplitPart: a part GCC split off ngx_connection_error
// and inlined back into the function itself (the -O2 build) runs after
// the function's entry: it is not probed a second time, and a note says
// so. With -flto the function is inlined into its callers, ngx_unix_recv
// among them, and each of those copies is probed.
func TestCheckInlinedSplitPart(t *testing.T) {
	for _, variant := range variants {
		t.Run(variant, func(t *testing.T) {
			bin, _ := nginx(t, variant)
			prog := mustCompile(t, bin, `ngx_connection_error { print(err, c->number) }`)
			pt := prog.Points[0]
			fns, err := bin.Lookup("ngx_connection_error")
			if err != nil {
				t.Fatal(err)
			}
			ins, err := bin.InlinedInstances("ngx_connection_error")
			if err != nil {
				t.Fatal(err)
			}
			split, recv := 0, 0
			for _, in := range ins {
				if in.IsSplitPart() {
					split++
				}
			}
			for _, in := range inlinedOf(pt) {
				if strings.Contains(in.Inlined, "inlined into ngx_connection_error at") {
					t.Errorf("a split part is probed: %+v", in)
				}
				if in.Symbol == "ngx_unix_recv" {
					recv++
				}
			}
			if len(pt.Instances) != len(fns)+len(ins)-split || len(prog.Probes) != len(pt.Instances) {
				t.Errorf("%d instances, %d probes; want %d out-of-line + %d copies - %d split parts", len(pt.Instances), len(prog.Probes), len(fns), len(ins), split)
			}
			switch variant {
			case "o2":
				if split == 0 || len(pt.Notes) != 1 || !strings.HasPrefix(pt.Notes[0], fmt.Sprintf("%d inlined copies of ngx_connection_error are parts GCC split off it", split)) {
					t.Errorf("split parts %d, notes %q", split, pt.Notes)
				}
			default:
				if recv == 0 {
					t.Errorf("no copy in ngx_unix_recv probed: %+v", pt.Instances)
				}
			}
		})
	}
}
