package watch

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// globalIndex knows the global variables (and arrays) of the watched
// struct type: code writes their fields rip-relative, with no base
// register (ngx_cleaner_event.timer_set = 1, or ngx_add_timer inlined on
// &ngx_shutdown_event).
type globalIndex struct {
	objs []globalObj // by start
}

type globalObj struct {
	name       string
	start, end uint64
	elem       uint64 // the struct's size; end-start is a multiple
}

// objectAt returns the watched-type object holding addr.
func (g *globalIndex) objectAt(addr uint64) (start uint64, name string, ok bool) {
	if g == nil {
		return 0, "", false
	}
	i := sort.Search(len(g.objs), func(i int) bool { return g.objs[i].end > addr })
	if i == len(g.objs) || addr < g.objs[i].start {
		return 0, "", false
	}
	o := g.objs[i]
	k := (addr - o.start) / o.elem
	if o.end-o.start == o.elem {
		return o.start, o.name, true
	}
	return o.start + k*o.elem, fmt.Sprintf("%s[%d]", o.name, k), true
}

// newGlobalIndex finds the global objects of the field's struct type: ELF
// object symbols sized a multiple of the struct whose DWARF variable has
// the struct (or an array of it) as its type. nil when there are none or
// the field is not from DWARF.
func newGlobalIndex(bin *symbols.Binary, field FieldRef) *globalIndex {
	d := bin.DWARF()
	if d == nil || field.StructSize <= 0 || field.StructTag == "" {
		return nil
	}
	syms, err := bin.ELF().Symbols()
	if err != nil {
		return nil
	}
	cands := map[uint64]elf.Symbol{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_OBJECT && s.Value != 0 && s.Size > 0 && s.Size%uint64(field.StructSize) == 0 {
			cands[s.Value] = s
		}
	}
	if len(cands) == 0 {
		return nil
	}
	g := &globalIndex{}
	seen := map[uint64]bool{}
	r := d.Reader()
	for {
		cu, err := r.Next()
		if err != nil || cu == nil {
			break
		}
		if !cu.Children {
			continue
		}
		// Top-level entries of the unit; functions' children are skipped
		// (function-scope statics are nested, see below).
		for depth := 1; depth > 0; {
			e, err := r.Next()
			if err != nil || e == nil {
				depth = 0
				break
			}
			if e.Tag == 0 {
				depth--
				continue
			}
			if e.Tag == dwarf.TagVariable {
				if addr, ok := varAddress(e); ok && !seen[addr] {
					if s, ok := cands[addr]; ok && isWatchedType(bin, e, field) {
						seen[addr] = true
						g.objs = append(g.objs, globalObj{name: symbols.BaseName(s.Name), start: addr, end: addr + s.Size, elem: uint64(field.StructSize)})
					}
				}
			}
			if e.Children {
				// Static locals (a function's "static ngx_event_t ev")
				// live in subprograms and lexical blocks.
				if e.Tag == dwarf.TagSubprogram || e.Tag == dwarf.TagLexDwarfBlock {
					depth++
					continue
				}
				r.SkipChildren()
			}
		}
	}
	if len(g.objs) == 0 {
		return nil
	}
	sort.Slice(g.objs, func(i, j int) bool { return g.objs[i].start < g.objs[j].start })
	return g
}

// varAddress decodes a location that is exactly DW_OP_addr <address>.
func varAddress(e *dwarf.Entry) (uint64, bool) {
	loc, ok := e.Val(dwarf.AttrLocation).([]byte)
	if !ok || len(loc) != 9 || loc[0] != 0x03 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(loc[1:]), true
}

func isWatchedType(bin *symbols.Binary, e *dwarf.Entry, field FieldRef) bool {
	off, ok := bin.Attr(e, dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return false
	}
	t, err := bin.DWARF().Type(off)
	if err != nil {
		return false
	}
	u := symbols.Underlying(t)
	for range 8 {
		a, ok := u.(*dwarf.ArrayType)
		if !ok {
			break
		}
		u = symbols.Underlying(a.Type)
	}
	st, ok := u.(*dwarf.StructType)
	return ok && st.StructName == field.StructTag && st.Size() == field.StructSize
}
