package watch

import (
	"debug/dwarf"
	"sort"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// annotateLines fills File, Line and Frames of the sites (sorted by
// address) from the DWARF line tables and the inline chains, and judges
// the variables in scope that live in a site's base register. Each
// compile unit holding a site is read once (symbols.InlineChains): its
// line table whole, its DIE tree only down the entries that hold a site.
func annotateLines(bin *symbols.Binary, sites []Site) {
	pcs := make([]uint64, len(sites))
	for i := range sites {
		pcs[i] = sites[i].Address
	}
	chains := bin.InlineChains(pcs)
	tables := map[dwarf.Offset]lineTable{}
	for i, ch := range chains {
		if ch.Unit == nil {
			continue
		}
		lt, ok := tables[ch.Unit.Offset]
		if !ok {
			lt = readLines(bin.DWARF(), ch.Unit)
			tables[ch.Unit.Offset] = lt
		}
		s := &sites[i]
		for _, v := range ch.Vars {
			variable(bin, ch.Unit, v, s)
		}
		file, line := lt.At(s.Address)
		s.File, s.Line = file, line
		if s.LoadAddr != 0 && s.LoadAddr <= s.Address {
			s.Lines = lt.linesIn(s.LoadAddr, s.Address, file, line)
		}
		s.Frames = s.Frames[:0]
		for k := len(ch.Calls) - 1; k >= 0; k-- {
			s.Frames = append(s.Frames, Frame{Function: ch.Calls[k].Name, File: file, Line: line})
			file, line = lt.FileName(ch.Calls[k].CallFile), ch.Calls[k].CallLine
		}
		name := ch.Function
		if name == "" {
			name = symbols.BaseName(s.Function)
		}
		s.Frames = append(s.Frames, Frame{Function: name, File: file, Line: line})
	}
}

// lineTable adds what watch needs to a unit's line table.
type lineTable struct{ *symbols.LineTable }

func readLines(d *dwarf.Data, cu *dwarf.Entry) lineTable {
	return lineTable{symbols.ReadLineTable(d, cu)}
}

// linesIn lists the lines of file in the rows for addresses lo to hi
// (both included; hi's own row is line), sorted.
func (lt lineTable) linesIn(lo, hi uint64, file string, line int) []int {
	set := map[int]bool{line: true}
	if f, l := lt.At(lo); f == file && l > 0 {
		set[l] = true
	}
	i := sort.Search(len(lt.Rows), func(i int) bool { return lt.Rows[i].Address >= lo })
	for ; i < len(lt.Rows) && lt.Rows[i].Address <= hi; i++ {
		r := lt.Rows[i]
		if !r.EndSequence && r.File != nil && r.File.Name == file && r.Line > 0 {
			set[r.Line] = true
		}
	}
	out := make([]int, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	sort.Ints(out)
	return out
}

// variable judges a parameter or local, in scope at the site, if the
// site's base register holds it.
func variable(bin *symbols.Binary, cu, e *dwarf.Entry, s *Site) {
	if e.AttrField(dwarf.AttrLocation) == nil || s.Base == NoReg {
		return
	}
	loc, _ := bin.Location(cu, e, s.Address)
	reg, add, ok := symbols.RegisterValue(loc)
	if !ok || reg != s.Base {
		return
	}
	h, label := hintFor(bin, s, e, add)
	judge(s, h, label)
}
