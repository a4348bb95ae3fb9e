package symbols

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
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

	bin  *Binary
	die  dwarf.Offset // concrete DW_TAG_subprogram, 0 if unknown
	unit *unit
}

// IsClone reports whether the instance has a GCC or LTO suffix.
func (f *Function) IsClone() bool { return f.Symbol != f.Name }

// Binary is the file that holds the instance: the executable or one of
// the modules of an Image. It is nil for a Function not found by lookup.
func (f *Function) Binary() *Binary { return f.bin }

// unit is what location lists need to know about a compile unit.
type unit struct {
	version  int
	base     uint64 // DW_AT_low_pc, the default base for location lists
	addrBase uint64
	locBase  uint64
	addrSize int
}

type index struct {
	funcs    map[string][]*Function // by C name
	versions unitVersionTable

	// DWARF is indexed a compile unit at a time, on demand: a function's
	// unit when its parameters are asked for, units in order until a type
	// is found. Attaching the default set reads a few units, not all.
	mu      sync.Mutex
	types   map[string][]dwarf.Offset  // "struct x", "union x", "enum x", typedef and base names
	units   map[dwarf.Offset]*unit     // scanned units, by CU DIE offset
	dies    map[uint64]dwarfSubprogram // entry address -> concrete subprogram
	next    dwarf.Offset               // the next unit the in-order scan reads
	scanned bool                       // every unit has been scanned
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
		var err error
		if ix.versions, err = unitVersions(b); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", b.Path, errIndex, err)
		}
	} else {
		ix.scanned = true
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
		// A versioned symbol (libc's _IO_fclose@@GLIBC_2.2.5) is the
		// function of the name before the @.
		symbol, _, _ := strings.Cut(s.Name, "@")
		name := BaseName(symbol)
		key := fmt.Sprintf("%s@%x", symbol, s.Value)
		if seen[key] {
			continue
		}
		seen[key] = true
		off, err := b.FileOffset(s.Value)
		if err != nil {
			continue
		}
		fn := &Function{Name: name, Symbol: symbol, Address: s.Value, Size: s.Size, Offset: off, Exported: dyn[s.Name], bin: b}
		ix.funcs[name] = append(ix.funcs[name], fn)
	}
	for _, fs := range ix.funcs {
		sort.Slice(fs, func(i, j int) bool { return fs[i].Address < fs[j].Address })
	}
	return ix, nil
}

// scanUnit indexes the top-level entries of the unit whose DIE is at off,
// once. The caller holds ix.mu.
func (b *Binary) scanUnit(ix *index, off dwarf.Offset) error {
	if _, done := ix.units[off]; done {
		return nil
	}
	r := b.dwarf.Reader()
	r.Seek(off)
	e, err := r.Next()
	if err != nil || e == nil {
		return err
	}
	cu := newUnit(e, ix.versions.at(e.Offset), r.AddressSize())
	ix.units[e.Offset] = cu
	if !e.Children {
		return nil
	}
	for depth := 1; depth > 0; {
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
				if len(ix.types[key]) < 16 {
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
	return nil
}

// newUnit reads what location lists need of the unit whose DIE is e.
func newUnit(e *dwarf.Entry, version, addrSize int) *unit {
	cu := &unit{version: version, addrSize: addrSize}
	if v, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
		cu.base = v
	}
	if v, ok := e.Val(dwarf.AttrAddrBase).(int64); ok {
		cu.addrBase = uint64(v)
	}
	if v, ok := e.Val(dwarf.AttrLoclistsBase).(int64); ok {
		cu.locBase = uint64(v)
	}
	return cu
}

// scanNext scans the next unit in .debug_info order; false when all are.
// The caller holds ix.mu.
func (b *Binary) scanNext(ix *index) bool {
	if ix.scanned {
		return false
	}
	r := b.dwarf.Reader()
	r.Seek(ix.next)
	e, err := r.Next()
	if err != nil || e == nil {
		ix.scanned = true
		return false
	}
	if err := b.scanUnit(ix, e.Offset); err != nil {
		ix.scanned = true
		return false
	}
	r.Seek(e.Offset)
	r.Next()
	r.SkipChildren()
	next, err := r.Next()
	if err != nil || next == nil || next.Offset <= e.Offset {
		// A corrupt unit can lead back: scanning must move forward.
		ix.scanned = true
		return true
	}
	ix.next = next.Offset
	return true
}

// typeOffsets returns the DIEs of a named type, scanning units in order
// until more than have entries are known (or none are left): a caller that
// found only declarations asks again with have = len(previous result).
func (b *Binary) typeOffsets(ix *index, key string, have int) []dwarf.Offset {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for len(ix.types[key]) <= have && b.scanNext(ix) {
	}
	return ix.types[key]
}

// allTypeNames scans every unit, for suggestions.
func (b *Binary) allTypeNames(ix *index) []string {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for b.scanNext(ix) {
	}
	names := make([]string, 0, len(ix.types))
	for k := range ix.types {
		names = append(names, k)
	}
	return names
}

// subprogram finds the concrete DW_TAG_subprogram of an instance through
// the unit covering its address, falling back to scanning every unit.
func (b *Binary) subprogram(fn *Function) (dwarf.Offset, *unit) {
	if fn.die != 0 || b.dwarf == nil {
		return fn.die, fn.unit
	}
	ix, err := b.idx()
	if err != nil {
		return 0, nil
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.dies[fn.Address]; !ok {
		if cu, err := b.dwarf.Reader().SeekPC(fn.Address); err == nil && cu != nil {
			b.scanUnit(ix, cu.Offset)
		}
	}
	for {
		if sp, ok := ix.dies[fn.Address]; ok {
			fn.die, fn.unit = sp.off, sp.unit
			return fn.die, fn.unit
		}
		if !b.scanNext(ix) {
			return 0, nil
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

// unitVersions is the table of the binary's debug file, read by Open
// (checkDWARF) before the DWARF was.
func unitVersions(b *Binary) (unitVersionTable, error) {
	if b.versions != nil {
		return b.versions, nil
	}
	f := b.file
	if b.debugFile != nil {
		f = b.debugFile
	}
	return unitVersionsOf(f, b.limits.units, b.Path)
}

// unitVersionsOf reads only the unit headers of f's .debug_info, seeking
// past each unit: the debug/dwarf parse holds the section, and a second
// full copy would double the cost of opening a binary. More than
// maxUnits units is a *LimitError naming path.
func unitVersionsOf(f *elf.File, maxUnits int, path string) (unitVersionTable, error) {
	sec := f.Section(".debug_info")
	if sec == nil {
		return unitVersionTable{}, nil
	}
	var r io.ReadSeeker = sec.Open()
	if sec.Flags&elf.SHF_COMPRESSED != 0 {
		// Seeking a compressed section decompresses it again: read it once.
		data, err := sec.Data()
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	size := int64(sec.Size) // Seek(0, io.SeekEnd) is not the size for section readers

	var t unitVersionTable
	order := f.ByteOrder
	var hdr [14]byte
	for off := int64(0); off+6 <= size; {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(r, hdr[:min(int64(len(hdr)), size-off)]); err != nil {
			return nil, err
		}
		length := int64(order.Uint32(hdr[:]))
		n := int64(4)
		if length == 0xffffffff {
			length = int64(order.Uint64(hdr[4:]))
			n = 12
		}
		if length < 0 || length > size-off-n {
			// A negative length would walk back, or stay, forever.
			return nil, fmt.Errorf("%s: .debug_info at %#x: unit length %#x runs past the end of the section (%#x bytes)", path, off, uint64(length), size)
		}
		if len(t) >= maxUnits {
			return nil, limits{units: maxUnits}.unitsError(path, len(t)+1)
		}
		t = append(t, struct {
			start   dwarf.Offset
			version int
		}{dwarf.Offset(off), int(order.Uint16(hdr[n:]))})
		off += n + length
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
