package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// InlinedInstance is a copy of a function that GCC inlined into another
// (a DW_TAG_inlined_subroutine): it has no symbol and no entry of its
// own, so a breakpoint goes where its code starts, inside the function
// that holds it, as gdb places one.
type InlinedInstance struct {
	Name string // the C function inlined
	// Address is where the copy starts executing: its DW_AT_entry_pc,
	// else its first address (Low).
	Address uint64
	// Low is the start of the copy's first address range: its entry when
	// it has no DW_AT_entry_pc, and where gdb 13 puts its breakpoint.
	Low uint64
	// Function is the out-of-line instance whose code holds Address;
	// Offset is Address - Function.Address, and FileOffset the file
	// offset of Address (what a uprobe needs).
	Function   *Function
	Offset     uint64
	FileOffset uint64
	// Caller is the function whose source has the call: Function's, or,
	// for a copy inlined into another inlined copy (Depth > 1), that
	// copy's function.
	Caller string
	// File and Line are the call's position; File is relative to the
	// build directory when it is under it, "" when unknown.
	File  string
	Line  int
	Depth int
	// DeclFile and DeclLine are where the inlined function is defined
	// (DW_AT_decl_file and DW_AT_decl_line of its abstract origin);
	// DeclFile is "" when unknown.
	DeclFile string
	DeclLine int
	// Params are the copy's own parameters, located at Address. One the
	// copy has no entry for is listed with Err set, never left out.
	Params []Param
}

// String names the copy: "ngx_http_close_request inlined into
// ngx_http_terminate_handler at ngx_http_request.c:2770", followed by
// the instance that holds it when that is not the caller.
func (in *InlinedInstance) String() string {
	file := "?"
	if in.File != "" {
		file = filepath.Base(in.File)
	}
	s := fmt.Sprintf("%s inlined into %s at %s:%d", in.Name, in.Caller, file, in.Line)
	if in.Function != nil && in.Function.Name != in.Caller {
		s += " in " + in.Function.Symbol
	}
	return s
}

// IsSplitPart reports whether the copy is a part GCC split off the
// function (partial inlining, -fipa-split) and inlined back into an
// instance of the function itself: its call is at the function's own
// definition line, not a call in the source. It runs only after the
// entry of the instance that holds it, as the rest of that instance's
// body: a probe there would fire a second time for the same call. A
// copy called by the function's source (a recursion inlined) is not one.
func (in *InlinedInstance) IsSplitPart() bool {
	return in.Caller == in.Name && in.DeclLine != 0 && in.Line == in.DeclLine && in.File == in.DeclFile
}

// inlineTable is every inlined copy of a binary, by the name of the
// function inlined: one pass over .debug_info, made when a probe first
// asks for a function's inlined copies.
type inlineTable struct {
	refs map[string][]inlineRef
	// units are the offsets of the unit DIEs, in order: the unit of any
	// DIE is the last one before it.
	units []dwarf.Offset
	// err is why the pass stopped before the end, if it did: the
	// copies before that point are known.
	err error

	mu    sync.Mutex
	files map[dwarf.Offset][]string // a unit's line-table files
	done  map[string]*inlinedSet    // resolved, by name
}

// inlineRef is a DW_TAG_inlined_subroutine, as the pass found it.
type inlineRef struct {
	die      dwarf.Offset
	origin   dwarf.Offset // 0 when none
	cu       dwarf.Offset
	unit     *unit
	entry    uint64
	low      uint64
	caller   string
	callFile int
	callLine int
	depth    int
}

// inlinedSet is one function's copies, resolved against the symbols.
type inlinedSet struct {
	instances []InlinedInstance
	unplaced  []uint64
}

// inlineTable returns the table, making it on first use.
func (b *Binary) inlineTable() *inlineTable {
	b.inlineOnce.Do(func() { b.inlines = b.scanInlines() })
	return b.inlines
}

// scanInlines reads every unit's DIE tree, noting each inlined copy with
// code, the function its call is written in, and its call site.
func (b *Binary) scanInlines() *inlineTable {
	t := &inlineTable{refs: map[string][]inlineRef{}, files: map[dwarf.Offset][]string{}, done: map[string]*inlinedSet{}}
	if b.dwarf == nil {
		return t
	}
	versions, err := unitVersions(b)
	if err != nil {
		t.err = err
		return t
	}
	// Names of abstract origins, read once each: an inline function has
	// one origin for all its copies.
	names := map[dwarf.Offset]string{}
	nameOf := func(e *dwarf.Entry) string {
		if n, ok := e.Val(dwarf.AttrName).(string); ok {
			return n
		}
		origin, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
		if !ok {
			origin, ok = e.Val(dwarf.AttrSpecification).(dwarf.Offset)
		}
		if !ok {
			return ""
		}
		if n, ok := names[origin]; ok {
			return n
		}
		n, _ := b.Attr(e, dwarf.AttrName).(string)
		names[origin] = n
		return n
	}
	// The functions enclosing the entry being read, innermost last, each
	// with the tree level of its entry.
	type frame struct {
		name    string
		level   int
		inlined bool
	}
	var stack []frame
	var cu *unit
	var cuOff dwarf.Offset
	level := 0
	r := b.dwarf.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			t.err = fmt.Errorf("%s: reading .debug_info for inlined copies: %w", b.Path, err)
			return t
		}
		if e == nil {
			return t
		}
		if e.Tag == 0 {
			level--
			for len(stack) > 0 && stack[len(stack)-1].level >= level {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		switch e.Tag {
		case dwarf.TagCompileUnit, dwarf.TagPartialUnit:
			level, stack = 0, stack[:0]
			cu, cuOff = newUnit(e, versions.at(e.Offset), r.AddressSize()), e.Offset
			t.units = append(t.units, cuOff)
		case dwarf.TagSubprogram:
			if e.Children && len(stack) < maxScopeDepth {
				stack = append(stack, frame{name: nameOf(e), level: level})
			}
		case dwarf.TagInlinedSubroutine:
			name := nameOf(e)
			if entry, low, ok := b.inlineEntry(e); ok && name != "" && cu != nil {
				ref := inlineRef{die: e.Offset, cu: cuOff, unit: cu, entry: entry, low: low, callFile: -1, depth: 1}
				ref.origin, _ = e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
				for i := len(stack) - 1; i >= 0; i-- {
					if ref.caller == "" {
						ref.caller = stack[i].name
					}
					if stack[i].inlined {
						ref.depth++
					}
				}
				if v, ok := e.Val(dwarf.AttrCallFile).(int64); ok {
					ref.callFile = int(v)
				}
				if v, ok := e.Val(dwarf.AttrCallLine).(int64); ok {
					ref.callLine = int(v)
				}
				t.refs[name] = append(t.refs[name], ref)
			}
			if e.Children && len(stack) < maxScopeDepth {
				stack = append(stack, frame{name: name, level: level, inlined: true})
			}
		}
		if e.Children {
			level++
		}
	}
}

// inlineEntry returns where an inlined copy starts: DW_AT_entry_pc (an
// address, or in DWARF 5 a constant offset from the copy's lowest
// address), else the start of its first range, which is low. A copy
// without code (no range, or only empty ones) has none. The first
// range, not the lowest: a copy split by GCC has its cold part, in
// .text.unlikely, below its hot code.
func (b *Binary) inlineEntry(e *dwarf.Entry) (entry, low uint64, ok bool) {
	base := uint64(0)
	if lo, isAddr := e.Val(dwarf.AttrLowpc).(uint64); isAddr {
		low, base, ok = lo, lo, true
	} else if e.AttrField(dwarf.AttrRanges) != nil {
		rs, err := b.dwarf.Ranges(e)
		if err != nil {
			return 0, 0, false
		}
		for _, rg := range rs {
			if rg[1] <= rg[0] {
				continue
			}
			if !ok {
				low, base, ok = rg[0], rg[0], true
			}
			base = min(base, rg[0])
		}
	}
	if !ok {
		return 0, 0, false
	}
	entry = low
	if f := e.AttrField(dwarf.AttrEntrypc); f != nil {
		switch v := f.Val.(type) {
		case uint64:
			entry = v
		case int64:
			if f.Class == dwarf.ClassConstant && v >= 0 {
				entry = base + uint64(v)
			}
		}
	}
	return entry, low, true
}

// inlined resolves the copies of the C function name once.
func (b *Binary) inlined(name string) (*inlinedSet, error) {
	t := b.inlineTable()
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.done[name]; ok {
		return s, t.err
	}
	s := &inlinedSet{}
	seen := map[uint64]bool{}
	for _, ref := range t.refs[name] {
		if seen[ref.entry] {
			continue // two entries for one copy: one breakpoint
		}
		seen[ref.entry] = true
		fn := b.Symbolize(ref.entry)
		if fn == nil {
			// A .cold part or code without a symbol: no instance to
			// attach to, and no guessing one.
			s.unplaced = append(s.unplaced, ref.entry)
			continue
		}
		in := InlinedInstance{
			Name: name, Address: ref.entry, Low: ref.low, Function: fn,
			Offset: ref.entry - fn.Address, FileOffset: fn.Offset + (ref.entry - fn.Address),
			Caller: ref.caller, Line: ref.callLine, Depth: ref.depth,
		}
		if in.Caller == "" {
			in.Caller = fn.Name
		}
		if files := b.unitFiles(t, ref.cu); ref.callFile >= 0 && ref.callFile < len(files) {
			in.File = files[ref.callFile]
		}
		in.DeclFile, in.DeclLine = b.declaration(t, ref.origin)
		in.Params = b.inlinedParams(&in, ref)
		s.instances = append(s.instances, in)
	}
	sort.Slice(s.instances, func(i, j int) bool { return s.instances[i].Address < s.instances[j].Address })
	sort.Slice(s.unplaced, func(i, j int) bool { return s.unplaced[i] < s.unplaced[j] })
	t.done[name] = s
	return s, t.err
}

// unitFiles returns the file names of a unit's line table, relative to
// its build directory when under it. The caller holds t.mu.
func (b *Binary) unitFiles(t *inlineTable, cuOff dwarf.Offset) []string {
	if fs, ok := t.files[cuOff]; ok {
		return fs
	}
	var out []string
	r := b.dwarf.Reader()
	r.Seek(cuOff)
	if cu, err := r.Next(); err == nil && cu != nil {
		dir, _ := cu.Val(dwarf.AttrCompDir).(string)
		if lr, err := b.dwarf.LineReader(cu); err == nil && lr != nil {
			for _, f := range lr.Files() {
				name := ""
				if f != nil {
					name = f.Name
					if dir != "" && strings.HasPrefix(name, dir+"/") {
						name = strings.TrimPrefix(name, dir+"/")
					}
				}
				out = append(out, name)
			}
		}
	}
	t.files[cuOff] = out
	return out
}

// declaration returns where the function of the DIE at origin is
// defined, following its abstract origin or specification. The caller
// holds t.mu.
func (b *Binary) declaration(t *inlineTable, origin dwarf.Offset) (string, int) {
	if origin == 0 {
		return "", 0
	}
	r := b.dwarf.Reader()
	r.Seek(origin)
	e, err := r.Next()
	if err != nil || e == nil {
		return "", 0
	}
	for range 4 {
		file, okFile := e.Val(dwarf.AttrDeclFile).(int64)
		line, okLine := e.Val(dwarf.AttrDeclLine).(int64)
		if okFile && okLine {
			// The file is an index into the line table of the unit
			// holding that entry (with LTO, not the copy's unit).
			i := sort.Search(len(t.units), func(i int) bool { return t.units[i] > e.Offset }) - 1
			if i < 0 {
				return "", 0
			}
			if files := b.unitFiles(t, t.units[i]); file >= 0 && file < int64(len(files)) {
				return files[file], int(line)
			}
			return "", 0
		}
		next, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
		if !ok {
			next, ok = e.Val(dwarf.AttrSpecification).(dwarf.Offset)
		}
		if !ok {
			return "", 0
		}
		r.Seek(next)
		if e, err = r.Next(); err != nil || e == nil {
			return "", 0
		}
	}
	return "", 0
}

// inlinedParams locates the copy's parameters at its entry. That is a
// point inside the function that holds the copy, unless the copy starts
// it: registers and constants are read, values kept in the frame or
// known only at the holder's entry (DW_OP_entry_value) are not.
func (b *Binary) inlinedParams(in *InlinedInstance, ref inlineRef) []Param {
	who := in.Name + " inlined into " + in.Caller
	at := paramSite{unit: ref.unit, who: who, pc: in.Address, mid: in.Offset != 0, fbErr: errMidFunctionFrame, consts: true}
	if !at.mid {
		if die, _ := b.subprogram(in.Function); die != 0 {
			r := b.dwarf.Reader()
			r.Seek(die)
			if sp, err := r.Next(); err == nil && sp != nil {
				at.cfaOffset, at.fbErr = frameBase(sp)
			}
		}
	}
	r := b.dwarf.Reader()
	r.Seek(ref.die)
	e, err := r.Next()
	if err != nil || e == nil {
		return nil
	}
	var got []Param
	seen := map[string]bool{}
	if e.Children {
		for {
			c, err := r.Next()
			if err != nil || c == nil || c.Tag == 0 {
				break
			}
			if c.Tag == dwarf.TagFormalParameter {
				p := b.paramIn(at, c)
				seen[p.Name] = true
				got = append(got, p)
			}
			if c.Children {
				r.SkipChildren()
			}
		}
	}
	origin, ok := e.Val(dwarf.AttrAbstractOrigin).(dwarf.Offset)
	if !ok {
		return got
	}
	// In the order of the declaration, with the parameters GCC gave no
	// entry at this copy listed as unavailable.
	byName := map[string]Param{}
	for _, p := range got {
		byName[p.Name] = p
	}
	var out []Param
	for _, p := range b.originParams(origin) {
		if q, ok := byName[p.Name]; ok {
			out = append(out, q)
			delete(byName, p.Name)
			continue
		}
		p.Err = fmt.Errorf("parameter %s of %s at %#x: %w: optimized out at this inlined site (the copy has no entry for it)", p.Name, who, in.Address, ErrNoLocation)
		out = append(out, p)
	}
	for _, p := range got {
		if _, left := byName[p.Name]; left {
			out = append(out, p)
		}
	}
	return out
}

// InlinedInstances returns the copies of the C function name that GCC
// inlined into other functions, nested copies included, by address; a
// name with a clone suffix (ngx_foo.isra.0) names one out-of-line
// instance and has none. The first call reads all of .debug_info. A copy
// whose entry lies in no function symbol's code is left out (see
// UnplacedInlines). Without DWARF there are none; err says why the DWARF
// could not be read to the end, and the copies before that point come
// with it.
func (b *Binary) InlinedInstances(name string) ([]InlinedInstance, error) {
	if BaseName(name) != name || b.dwarf == nil {
		return nil, nil
	}
	s, err := b.inlined(name)
	return append([]InlinedInstance(nil), s.instances...), err
}

// UnplacedInlines returns the entries of the inlined copies of name that
// InlinedInstances leaves out: no function symbol's code holds them (a
// .cold part, or code without a symbol).
func (b *Binary) UnplacedInlines(name string) []uint64 {
	if BaseName(name) != name || b.dwarf == nil {
		return nil
	}
	s, _ := b.inlined(name)
	return append([]uint64(nil), s.unplaced...)
}

// InlinedNames returns the names of the functions with inlined copies
// whose names contain pattern, sorted.
func (b *Binary) InlinedNames(pattern string) []string {
	if b.dwarf == nil {
		return nil
	}
	var out []string
	for name := range b.inlineTable().refs {
		if strings.Contains(name, pattern) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// NewInlinedScope resolves an inlined copy's own parameters, so that
// c->number reads the copy's c. A parameter that cannot be located
// there resolves to a Root with Unavailable set, not to an error: one
// copy with an optimized-out argument does not stop the others from
// being probed.
func (b *Binary) NewInlinedScope(in *InlinedInstance) *FunctionScope {
	return &FunctionScope{Function: in.Function, Params: in.Params, Inlined: in}
}

// InlinedInstances returns the inlined copies of the C function: in the
// module that qualifies it (libc.so.6:memcpy); else in the executable
// when it has an out-of-line instance (as Lookup), or else in nginx and
// its modules. unplaced counts the copies left out (UnplacedInlines).
func (im *Image) InlinedInstances(name string) (out []InlinedInstance, unplaced int, err error) {
	mod, fn := SplitQualified(name)
	if BaseName(fn) != fn {
		return nil, 0, nil
	}
	var bins []*Binary
	switch {
	case mod != "":
		b, err := im.Module(mod)
		if err != nil {
			return nil, 0, err
		}
		bins = []*Binary{b}
	case im.main.HasFunction(fn):
		bins = []*Binary{im.main}
	default:
		for _, b := range im.Modules() {
			if b == im.main || b.Kind != Other {
				bins = append(bins, b)
			}
		}
	}
	var errs []error
	for _, b := range bins {
		ins, err := b.InlinedInstances(fn)
		out = append(out, ins...)
		unplaced += len(b.UnplacedInlines(fn))
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, unplaced, errors.Join(errs...)
}

// InlinedFunctions returns the inlined copies of every function whose
// name contains pattern, in nginx and its modules, or in the module of
// MODULE:PATTERN; by module, then name, then address.
func (im *Image) InlinedFunctions(pattern string) ([]InlinedInstance, error) {
	var mods []*Binary
	if mod, rest := SplitQualified(pattern); mod != "" {
		b, err := im.Module(mod)
		if err != nil {
			return nil, err
		}
		mods, pattern = []*Binary{b}, rest
	} else {
		for _, b := range im.Modules() {
			if b == im.main || b.Kind != Other {
				mods = append(mods, b)
			}
		}
	}
	var out []InlinedInstance
	var errs []error
	for _, b := range mods {
		for _, name := range b.InlinedNames(pattern) {
			ins, err := b.InlinedInstances(name)
			out = append(out, ins...)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return out, errors.Join(dedupeErrors(errs)...)
}

// dedupeErrors drops repeats: one unreadable DWARF, many names.
func dedupeErrors(errs []error) []error {
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	return out
}
