package symbols

import (
	"debug/dwarf"
	"sort"
)

// UnitIndex finds the compile unit whose address ranges hold a pc.
type UnitIndex struct {
	ranges []unitRange // sorted by lo
	// maxHi[i] is the highest hi of ranges[:i+1]: LTO units may overlap,
	// so the search goes back until no earlier range can reach the pc.
	maxHi []uint64
}

type unitRange struct {
	lo, hi uint64
	cu     *dwarf.Entry
}

// IndexUnits reads the ranges of every compile and partial unit of d,
// without reading their children.
func IndexUnits(d *dwarf.Data) *UnitIndex {
	x := &UnitIndex{}
	if d == nil {
		return x
	}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == dwarf.TagCompileUnit || e.Tag == dwarf.TagPartialUnit {
			if rs, err := d.Ranges(e); err == nil {
				for _, rg := range rs {
					x.ranges = append(x.ranges, unitRange{rg[0], rg[1], e})
				}
			}
		}
		if e.Children {
			r.SkipChildren()
		}
	}
	sort.Slice(x.ranges, func(i, j int) bool { return x.ranges[i].lo < x.ranges[j].lo })
	x.maxHi = make([]uint64, len(x.ranges))
	var hi uint64
	for i, rg := range x.ranges {
		hi = max(hi, rg.hi)
		x.maxHi[i] = hi
	}
	return x
}

// At returns the unit holding pc, or nil if none does.
func (x *UnitIndex) At(pc uint64) *dwarf.Entry {
	i := sort.Search(len(x.ranges), func(i int) bool { return x.ranges[i].lo > pc }) - 1
	for ; i >= 0 && x.maxHi[i] > pc; i-- {
		if pc < x.ranges[i].hi {
			return x.ranges[i].cu
		}
	}
	return nil
}

// InlinedCall is a DW_TAG_inlined_subroutine entry: the function inlined
// there and the call site, whose file is an index into the unit's line
// table files (LineTable.FileName).
type InlinedCall struct {
	Name     string // "?" when the entry names none
	CallFile int
	CallLine int
}

// InlinedCall reads e, a DW_TAG_inlined_subroutine entry.
func (b *Binary) InlinedCall(e *dwarf.Entry) InlinedCall {
	c := InlinedCall{Name: "?", CallFile: -1}
	if name, _ := b.Attr(e, dwarf.AttrName).(string); name != "" {
		c.Name = name
	}
	if v, ok := e.Val(dwarf.AttrCallFile).(int64); ok {
		c.CallFile = int(v)
	}
	if v, ok := e.Val(dwarf.AttrCallLine).(int64); ok {
		c.CallLine = int(v)
	}
	return c
}

// unitIndex returns the index of the binary's units, built on first use.
func (b *Binary) unitIndex() *UnitIndex {
	b.unitsOnce.Do(func() { b.units = IndexUnits(b.dwarf) })
	return b.units
}

// InlineChain is where a pc lies in the DWARF tree: its compile unit, the
// subprogram holding it, the calls inlined there and the variables in
// scope.
type InlineChain struct {
	// Unit is the compile unit holding the pc; its line table
	// (ReadLineTable) names the files of Calls. nil when no unit holds
	// the pc, and then the rest is empty.
	Unit *dwarf.Entry
	// Function is the name of the subprogram holding the pc, "" when no
	// subprogram entry covers it or it has no name.
	Function string
	// Calls are the inlined subroutines holding the pc, outermost first:
	// the innermost owns the pc's line, and each call's CallFile and
	// CallLine are the position of the frame outside it.
	Calls []InlinedCall
	// Vars are the formal parameters and variables declared in the
	// subprogram, inlined subroutines and lexical blocks that hold the
	// pc, in the order of the DIE tree (outer scopes first); whether each
	// has a location at the pc is for Location to say.
	Vars []*dwarf.Entry
}

// maxScopeDepth bounds how deep the scope walk descends.
const maxScopeDepth = 64

// InlineChain reads what DWARF says of the code at pc, a virtual
// address. The unit's DIE tree is read down the entries that hold pc
// only. Without DWARF the chain is empty.
func (b *Binary) InlineChain(pc uint64) InlineChain {
	return b.InlineChains([]uint64{pc})[0]
}

// InlineChains is InlineChain for many pcs, in their order: each unit
// holding one of them is read once.
func (b *Binary) InlineChains(pcs []uint64) []InlineChain {
	out := make([]InlineChain, len(pcs))
	if b.dwarf == nil {
		return out
	}
	units := b.unitIndex()
	byUnit := map[dwarf.Offset][]int{}
	var order []dwarf.Offset
	for i, pc := range pcs {
		cu := units.At(pc)
		if cu == nil {
			continue
		}
		if _, ok := byUnit[cu.Offset]; !ok {
			order = append(order, cu.Offset)
		}
		byUnit[cu.Offset] = append(byUnit[cu.Offset], i)
		out[i].Unit = cu
	}
	for _, off := range order {
		r := b.dwarf.Reader()
		r.Seek(off)
		if e, err := r.Next(); err == nil && e != nil && e.Children {
			b.walkScopes(r, pcs, out, byUnit[off], 0)
		}
	}
	return out
}

// walkScopes reads the children of the entry just read, whose scope holds
// the pcs idx. It descends only into subprograms, inlined subroutines and
// lexical blocks that hold one of them, and adds to the chain of each pc
// its subprogram, the inlined subroutines and the variables it meets.
func (b *Binary) walkScopes(r *dwarf.Reader, pcs []uint64, out []InlineChain, idx []int, depth int) {
	for {
		e, err := r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			return
		}
		var in []int
		switch e.Tag {
		case dwarf.TagSubprogram, dwarf.TagInlinedSubroutine, dwarf.TagLexDwarfBlock:
			if depth < maxScopeDepth && (e.AttrField(dwarf.AttrLowpc) != nil || e.AttrField(dwarf.AttrRanges) != nil) {
				if rs, err := b.dwarf.Ranges(e); err == nil {
					for _, i := range idx {
						for _, rg := range rs {
							if pcs[i] >= rg[0] && pcs[i] < rg[1] {
								in = append(in, i)
								break
							}
						}
					}
				}
			}
		case dwarf.TagFormalParameter, dwarf.TagVariable:
			if depth > 0 {
				for _, i := range idx {
					out[i].Vars = append(out[i].Vars, e)
				}
			}
		}
		if len(in) > 0 {
			switch e.Tag {
			case dwarf.TagSubprogram:
				name, _ := b.Attr(e, dwarf.AttrName).(string)
				for _, i := range in {
					out[i].Function = name
				}
			case dwarf.TagInlinedSubroutine:
				call := b.InlinedCall(e)
				for _, i := range in {
					out[i].Calls = append(out[i].Calls, call)
				}
			}
		}
		if e.Children {
			if len(in) > 0 {
				b.walkScopes(r, pcs, out, in, depth+1)
			} else {
				r.SkipChildren()
			}
		}
	}
}
