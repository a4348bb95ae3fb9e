package symbols

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"
)

// Function is one instance of a C function: the function itself, a GCC
// clone (.isra, .constprop, .part), an LTO-private copy, or an out-of-line
// copy of an inline function. Cold parts are not instances: they are not
// entry points.
type Function struct {
	Name     string // C name, clone suffixes removed
	Symbol   string // as in the ELF symbol table
	Address  uint64 // entry, virtual address
	Size     uint64
	Offset   uint64 // entry, file offset (what a uprobe needs)
	Exported bool   // in .dynsym

	die  dwarf.Offset // concrete DW_TAG_subprogram, 0 if unknown
	unit *unit
}

// IsClone reports whether the instance has a GCC or LTO suffix.
func (f *Function) IsClone() bool { return f.Symbol != f.Name }

// unit is what location lists need to know about a compile unit.
type unit struct {
	version  int
	base     uint64 // DW_AT_low_pc, the default base for location lists
	addrBase uint64
	locBase  uint64
	addrSize int
}

type index struct {
	funcs map[string][]*Function     // by C name
	types map[string][]dwarf.Offset  // "struct x", "union x", "enum x", typedef and base names
	units map[dwarf.Offset]*unit     // by CU DIE offset
	dies  map[uint64]dwarfSubprogram // entry address -> concrete subprogram
}

type dwarfSubprogram struct {
	off  dwarf.Offset
	unit *unit
}

func (b *Binary) idx() (*index, error) {
	b.indexOnce.Do(func() { b.index, b.indexErr = b.buildIndex() })
	return b.index, b.indexErr
}

// BaseName strips GCC clone and LTO suffixes: C names contain no dots.
func BaseName(symbol string) string {
	if i := strings.IndexByte(symbol, '.'); i > 0 {
		return symbol[:i]
	}
	return symbol
}

func (b *Binary) buildIndex() (*index, error) {
	ix := &index{
		funcs: map[string][]*Function{},
		types: map[string][]dwarf.Offset{},
		units: map[dwarf.Offset]*unit{},
		dies:  map[uint64]dwarfSubprogram{},
	}
	if b.dwarf != nil {
		if err := b.walkDWARF(ix); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", b.Path, errIndex, err)
		}
	}
	dyn := map[string]bool{}
	if ds, err := b.file.DynamicSymbols(); err == nil {
		for _, s := range ds {
			dyn[s.Name] = true
		}
	}
	seen := map[string]bool{}
	for _, s := range b.FunctionSymbols() {
		if strings.Contains(s.Name, ".cold") {
			continue
		}
		name := BaseName(s.Name)
		key := fmt.Sprintf("%s@%x", name, s.Value)
		if seen[key] {
			continue
		}
		seen[key] = true
		off, err := b.FileOffset(s.Value)
		if err != nil {
			continue
		}
		fn := &Function{Name: name, Symbol: s.Name, Address: s.Value, Size: s.Size, Offset: off, Exported: dyn[s.Name]}
		if sp, ok := ix.dies[s.Value]; ok {
			fn.die, fn.unit = sp.off, sp.unit
		}
		ix.funcs[name] = append(ix.funcs[name], fn)
	}
	for _, fs := range ix.funcs {
		sort.Slice(fs, func(i, j int) bool { return fs[i].Address < fs[j].Address })
	}
	return ix, nil
}

func (b *Binary) walkDWARF(ix *index) error {
	versions, err := unitVersions(b)
	if err != nil {
		return err
	}
	r := b.dwarf.Reader()
	var cu *unit
	depth := 0
	for {
		e, err := r.Next()
		if err != nil {
			return err
		}
		if e == nil {
			return nil
		}
		if e.Tag == 0 {
			depth--
			continue
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			cu = &unit{version: versions.at(e.Offset), addrSize: r.AddressSize()}
			if v, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
				cu.base = v
			}
			if v, ok := e.Val(dwarf.AttrAddrBase).(int64); ok {
				cu.addrBase = uint64(v)
			}
			if v, ok := e.Val(dwarf.AttrLoclistsBase).(int64); ok {
				cu.locBase = uint64(v)
			}
			ix.units[e.Offset] = cu
			depth = 0
			if e.Children {
				depth = 1
			}
			continue
		case dwarf.TagSubprogram:
			b.indexSubprogram(ix, e, cu)
		case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagEnumerationType, dwarf.TagTypedef, dwarf.TagBaseType:
			if name, ok := e.Val(dwarf.AttrName).(string); ok && !isDeclaration(e) {
				key := name
				switch e.Tag {
				case dwarf.TagStructType:
					key = "struct " + name
				case dwarf.TagUnionType:
					key = "union " + name
				case dwarf.TagEnumerationType:
					key = "enum " + name
				}
				if len(ix.types[key]) < 4 {
					ix.types[key] = append(ix.types[key], e.Offset)
				}
			}
		case dwarf.TagNamespace:
			if e.Children {
				depth++
			}
			continue
		}
		if e.Children {
			r.SkipChildren()
		}
	}
}

func isDeclaration(e *dwarf.Entry) bool {
	v, _ := e.Val(dwarf.AttrDeclaration).(bool)
	return v
}

func (b *Binary) indexSubprogram(ix *index, e *dwarf.Entry, cu *unit) {
	if lo, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
		if _, dup := ix.dies[lo]; !dup {
			ix.dies[lo] = dwarfSubprogram{e.Offset, cu}
		}
		return
	}
	if e.AttrField(dwarf.AttrRanges) == nil {
		return
	}
	ranges, err := b.dwarf.Ranges(e)
	if err != nil {
		return
	}
	for _, rg := range ranges {
		if _, dup := ix.dies[rg[0]]; !dup {
			ix.dies[rg[0]] = dwarfSubprogram{e.Offset, cu}
		}
	}
}

// unitVersionTable maps .debug_info offsets to unit versions; the standard
// library does not expose a unit's version, and location lists need it.
type unitVersionTable []struct {
	start   dwarf.Offset
	version int
}

func (t unitVersionTable) at(off dwarf.Offset) int {
	i := sort.Search(len(t), func(i int) bool { return t[i].start > off }) - 1
	if i < 0 {
		return 4
	}
	return t[i].version
}

func unitVersions(b *Binary) (unitVersionTable, error) {
	f := b.file
	if b.debugFile != nil {
		f = b.debugFile
	}
	data, err := f.Section(".debug_info").Data()
	if err != nil {
		return nil, err
	}
	var t unitVersionTable
	order := f.ByteOrder
	for off := 0; off+6 <= len(data); {
		length := uint64(order.Uint32(data[off:]))
		hdr := 4
		if length == 0xffffffff {
			if off+14 > len(data) {
				break
			}
			length = order.Uint64(data[off+4:])
			hdr = 12
		}
		version := int(order.Uint16(data[off+hdr:]))
		t = append(t, struct {
			start   dwarf.Offset
			version int
		}{dwarf.Offset(off), version})
		off += hdr + int(length)
	}
	return t, nil
}

// Lookup returns every instance of the C function name (or of the exact
// symbol, when name carries a clone suffix).
func (b *Binary) Lookup(name string) ([]*Function, error) {
	ix, err := b.idx()
	if err != nil {
		return nil, err
	}
	if fs, ok := ix.funcs[BaseName(name)]; ok {
		if BaseName(name) == name {
			return fs, nil
		}
		for _, f := range fs {
			if f.Symbol == name {
				return []*Function{f}, nil
			}
		}
	}
	names := make([]string, 0, len(ix.funcs))
	for n := range ix.funcs {
		names = append(names, n)
	}
	return nil, &NotFoundError{Kind: ErrFunctionNotFound, Name: name, Where: b.Path, Closest: Closest(name, names, 5)}
}

// HasFunction reports whether the C function has an instance.
func (b *Binary) HasFunction(name string) bool {
	ix, err := b.idx()
	return err == nil && len(ix.funcs[BaseName(name)]) > 0
}

// Functions returns every function instance whose C name contains pattern,
// sorted by name then address.
func (b *Binary) Functions(pattern string) ([]*Function, error) {
	ix, err := b.idx()
	if err != nil {
		return nil, err
	}
	var out []*Function
	for name, fs := range ix.funcs {
		if strings.Contains(name, pattern) {
			out = append(out, fs...)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Address < out[j].Address
	})
	return out, nil
}

// Symbolize returns the function instance containing vaddr, if any.
func (b *Binary) Symbolize(vaddr uint64) *Function {
	ix, err := b.idx()
	if err != nil {
		return nil
	}
	for _, fs := range ix.funcs {
		for _, f := range fs {
			if vaddr >= f.Address && vaddr < f.Address+f.Size {
				return f
			}
		}
	}
	return nil
}
