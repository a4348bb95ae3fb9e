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
