package watch

import (
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

// newGlobalIndex indexes the global objects of the field's struct type
// (symbols.GlobalsOfType). nil when there are none or the field is not
// from DWARF.
func newGlobalIndex(bin *symbols.Binary, field FieldRef) *globalIndex {
	gs := bin.GlobalsOfType(field.StructTag, field.StructSize)
	if len(gs) == 0 {
		return nil
	}
	g := &globalIndex{}
	for _, v := range gs {
		g.objs = append(g.objs, globalObj{name: v.Name, start: v.Addr, end: v.Addr + v.Size, elem: uint64(field.StructSize)})
	}
	return g
}
