package symbols_test

import (
	"debug/dwarf"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// TestUnitIndex: every function symbol of both nginx builds maps to a
// unit that a linear scan of all unit ranges agrees holds it, and in -O2
// ngx_unix_recv maps to ngx_recv.c.
func TestUnitIndex(t *testing.T) {
	for _, variant := range []string{nginxtest.VariantO2, nginxtest.VariantLTO} {
		t.Run(variant, func(t *testing.T) {
			b := openBinary(t, nginxtest.Build(t, variant).Binary)
			d := b.DWARF()
			x := symbols.IndexUnits(d)
			type rng struct {
				lo, hi uint64
				cu     *dwarf.Entry
			}
			var all []rng
			r := d.Reader()
			for e, err := r.Next(); err == nil && e != nil; e, err = r.Next() {
				if e.Tag == dwarf.TagCompileUnit || e.Tag == dwarf.TagPartialUnit {
					rs, _ := d.Ranges(e)
					for _, rg := range rs {
						all = append(all, rng{rg[0], rg[1], e})
					}
				}
				r.SkipChildren()
			}
			holds := func(pc uint64) map[dwarf.Offset]bool {
				set := map[dwarf.Offset]bool{}
				for _, rg := range all {
					if pc >= rg.lo && pc < rg.hi {
						set[rg.cu.Offset] = true
					}
				}
				return set
			}
			checked := 0
			for _, s := range b.FunctionSymbols() {
				want := holds(s.Value)
				got := x.At(s.Value)
				switch {
				case len(want) == 0 && got != nil:
					t.Errorf("%s %#x: At = unit %#x, but no unit holds it", s.Name, s.Value, got.Offset)
				case len(want) > 0 && (got == nil || !want[got.Offset]):
					t.Errorf("%s %#x: At = %v, want one of %v", s.Name, s.Value, got, want)
				}
				if len(want) > 0 {
					checked++
				}
			}
			if checked < 1000 {
				t.Errorf("only %d function symbols lie in a unit, want the whole nginx (> 1000)", checked)
			}
			if x.At(0) != nil {
				t.Errorf("At(0) found a unit")
			}
			if variant == nginxtest.VariantO2 {
				f, err := b.Functions("ngx_unix_recv")
				if err != nil || len(f) == 0 {
					t.Fatalf("ngx_unix_recv: %v", err)
				}
				cu := x.At(f[0].Address)
				if cu == nil {
					t.Fatalf("ngx_unix_recv %#x: no unit", f[0].Address)
				}
				if name, _ := cu.Val(dwarf.AttrName).(string); !strings.HasSuffix(name, "ngx_recv.c") {
					t.Errorf("ngx_unix_recv's unit is %q, want .../ngx_recv.c", name)
				}
			}
		})
	}
}
