package watch

import (
	"debug/dwarf"
	"sort"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// annotateLines fills File, Line and Frames of the sites (sorted by
// address) from the DWARF line tables and inlined-subroutine entries. Each
// compile unit holding a site is read once: its line table whole, its
// DIE tree only down the entries whose ranges hold a site.
func annotateLines(bin *symbols.Binary, sites []Site) {
	d := bin.DWARF()
	units := symbols.IndexUnits(d)
	byUnit := map[dwarf.Offset][]int{}
	cus := map[dwarf.Offset]*dwarf.Entry{}
	for i := range sites {
		if cu := units.At(sites[i].Address); cu != nil {
			byUnit[cu.Offset] = append(byUnit[cu.Offset], i)
			cus[cu.Offset] = cu
		}
	}
	for off, idx := range byUnit {
		cu := cus[off]
		lt := readLines(d, cu)
		w := &scopeWalker{bin: bin, cu: cu, sites: sites, chains: map[int][]symbols.InlinedCall{}, subs: map[int]string{}}
		r := d.Reader()
		r.Seek(cu.Offset)
		if e, err := r.Next(); err == nil && e != nil && e.Children {
			w.walk(r, idx, 0)
		}
		for _, i := range idx {
			s := &sites[i]
			file, line := lt.At(s.Address)
			s.File, s.Line = file, line
			if s.LoadAddr != 0 && s.LoadAddr <= s.Address {
				s.Lines = lt.linesIn(s.LoadAddr, s.Address, file, line)
			}
			chain := w.chains[i] // outermost first
			s.Frames = s.Frames[:0]
			for k := len(chain) - 1; k >= 0; k-- {
				s.Frames = append(s.Frames, Frame{Function: chain[k].Name, File: file, Line: line})
				file, line = lt.FileName(chain[k].CallFile), chain[k].CallLine
			}
			name := w.subs[i]
			if name == "" {
				name = symbols.BaseName(s.Function)
			}
			s.Frames = append(s.Frames, Frame{Function: name, File: file, Line: line})
		}
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

// scopeWalker reads a unit's DIE tree for the sites in it.
type scopeWalker struct {
	bin    *symbols.Binary
	cu     *dwarf.Entry
	sites  []Site
	chains map[int][]symbols.InlinedCall // by site index, outermost first
	subs   map[int]string                // by site index: the containing subprogram
}

// walk reads the children of the entry just read, whose scope holds the
// sites idx. It descends only into subprograms, inlined subroutines and
// blocks that hold a site; it appends each inlined subroutine to the
// chains of the sites it holds, names each site's subprogram, and judges
// the variables in scope that live in a site's base register.
func (w *scopeWalker) walk(r *dwarf.Reader, idx []int, depth int) {
	d := w.bin.DWARF()
	for {
		e, err := r.Next()
		if err != nil || e == nil || e.Tag == 0 {
			return
		}
		var in []int
		switch e.Tag {
		case dwarf.TagSubprogram, dwarf.TagInlinedSubroutine, dwarf.TagLexDwarfBlock:
			if depth < 64 && (e.AttrField(dwarf.AttrLowpc) != nil || e.AttrField(dwarf.AttrRanges) != nil) {
				if rs, err := d.Ranges(e); err == nil {
					for _, i := range idx {
						pc := w.sites[i].Address
						for _, rg := range rs {
							if pc >= rg[0] && pc < rg[1] {
								in = append(in, i)
								break
							}
						}
					}
				}
			}
		case dwarf.TagFormalParameter, dwarf.TagVariable:
			if depth > 0 {
				w.variable(e, idx)
			}
		}
		if len(in) > 0 {
			switch e.Tag {
			case dwarf.TagSubprogram:
				name, _ := w.bin.Attr(e, dwarf.AttrName).(string)
				for _, i := range in {
					w.subs[i] = name
				}
			case dwarf.TagInlinedSubroutine:
				call := w.bin.InlinedCall(e)
				for _, i := range in {
					w.chains[i] = append(w.chains[i], call)
				}
			}
		}
		if e.Children {
			if len(in) > 0 {
				w.walk(r, in, depth+1)
			} else {
				r.SkipChildren()
			}
		}
	}
}

// variable judges a parameter or local against the sites of its scope
// whose base register holds it.
func (w *scopeWalker) variable(e *dwarf.Entry, idx []int) {
	if e.AttrField(dwarf.AttrLocation) == nil {
		return
	}
	for _, i := range idx {
		s := &w.sites[i]
		if s.Base == NoReg {
			continue
		}
		loc, _ := w.bin.Location(w.cu, e, s.Address)
		reg, add, ok := symbols.RegisterValue(loc)
		if !ok || reg != s.Base {
			continue
		}
		h, label := hintFor(w.bin, s, e, add)
		judge(s, h, label)
	}
}
