package stacks

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"github.com/ianlancetaylor/demangle"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Module is one ELF file mapped into a process, indexed once: CFI,
// function symbols, and (with DWARF) line tables and inline chains.
type Module struct {
	Path    string
	BuildID string
	HasCFI  bool
	// Replaced says whether the file on disk is no longer what is mapped.
	Replaced string

	bin   *symbols.Binary
	loads []*elf.Prog
	fdes  frame.FrameDescriptionEntries
	syms  []symbol // sorted by address

	mu    sync.Mutex
	lines map[dwarf.Offset]*symbols.LineTable // per compile unit, built on first use
	// limitNote says why a line table was left out.
	limitNote string
	pcs       map[uint64][]Frame // symbolized pcs, stacks repeat
}

type symbol struct {
	name       string
	addr, size uint64
}

// ErrNoCFI means a module has neither .eh_frame nor .debug_frame.
var ErrNoCFI = errors.New("no call frame information")

// OpenModule indexes the ELF file at path. Debug info is looked up the way
// package symbols does (embedded, .gnu_debuglink, build-id, then opts'
// directories and fetch); opts may be nil.
func OpenModule(path string, opts *symbols.OpenOptions) (*Module, error) {
	bin, err := symbols.Open(path, opts)
	if err != nil {
		return nil, err
	}
	m := &Module{Path: path, BuildID: bin.BuildID, bin: bin, lines: map[dwarf.Offset]*symbols.LineTable{}, pcs: map[uint64][]Frame{}}
	f := bin.ELF()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			m.loads = append(m.loads, p)
		}
	}
	if err := m.loadCFI(f); err != nil {
		bin.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, s := range bin.FunctionSymbols() {
		m.syms = append(m.syms, symbol{name: s.Name, addr: s.Value, size: s.Size})
	}
	sort.Slice(m.syms, func(i, j int) bool { return m.syms[i].addr < m.syms[j].addr })
	return m, nil
}

// Close releases the module's files.
func (m *Module) Close() error { return m.bin.Close() }

func (m *Module) loadCFI(f *elf.File) error {
	if s := f.Section(".eh_frame"); s != nil && s.Type != elf.SHT_NOBITS {
		data, err := s.Data()
		if err != nil {
			return fmt.Errorf(".eh_frame: %w", err)
		}
		fdes, err := parseCFI(data, s.Addr)
		if err != nil {
			return fmt.Errorf(".eh_frame: %w", err)
		}
		m.fdes = m.fdes.Append(fdes)
	}
	if s := f.Section(".debug_frame"); s != nil && s.Type != elf.SHT_NOBITS {
		if data, err := s.Data(); err == nil {
			if fdes, err := parseCFI(data, 0); err == nil {
				m.fdes = m.fdes.Append(fdes)
			}
		}
	}
	m.HasCFI = len(m.fdes) > 0
	return nil
}

// vaddr converts an address in the process to the module's virtual
// address, through the mapping that contains it.
func (m *Module) vaddr(mp Mapping, addr uint64) (uint64, bool) {
	fileOff := addr - mp.Start + mp.Offset
	for _, p := range m.loads {
		if fileOff >= p.Off && fileOff < p.Off+p.Filesz {
			return fileOff - p.Off + p.Vaddr, true
		}
	}
	return 0, false
}

// symbolAt finds the function symbol containing vaddr. Several symbols
// may share an address (aliases, .localalias): prefer a plain name.
func (m *Module) symbolAt(vaddr uint64) (symbol, bool) {
	i := sort.Search(len(m.syms), func(i int) bool { return m.syms[i].addr > vaddr }) - 1
	var found symbol
	ok := false
	for j := i; j >= 0 && m.syms[j].addr == m.syms[i].addr; j-- {
		s := m.syms[j]
		if s.size != 0 && vaddr >= s.addr+s.size {
			continue
		}
		if !ok || strings.Contains(found.name, ".localalias") {
			found, ok = s, true
		}
	}
	return found, ok
}

// atFunctionEntry reports whether vaddr is the first instruction of a
// function symbol.
func (m *Module) atFunctionEntry(vaddr uint64) bool {
	s, ok := m.symbolAt(vaddr)
	return ok && s.addr == vaddr
}

func (m *Module) linesFor(cu *dwarf.Entry) *symbols.LineTable {
	if l, ok := m.lines[cu.Offset]; ok {
		return l
	}
	l, err := symbols.ReadLineTableLimit(m.bin.DWARF(), cu, m.bin.LineRowsLimit(), m.Path)
	if err != nil {
		// Over the bound: no lines in the unit rather than wrong ones.
		l = &symbols.LineTable{}
		if m.limitNote == "" {
			m.limitNote = err.Error()
		}
	}
	m.lines[cu.Offset] = l
	return l
}

// note is what a stack through the module should say of it: a line
// table over its bound.
func (m *Module) note() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limitNote
}

// symbolize returns the frames at vaddr: inlined callees first, then the
// function that contains them.
func (m *Module) symbolize(vaddr uint64) []Frame {
	m.mu.Lock()
	defer m.mu.Unlock()
	if fs, ok := m.pcs[vaddr]; ok {
		return fs
	}
	base := Frame{Module: filepath.Base(m.Path), Address: vaddr}
	if s, ok := m.symbolAt(vaddr); ok {
		base.Symbol = demangled(s.name)
		base.Offset = vaddr - s.addr
	}
	frames := []Frame{base}
	if chain := m.bin.InlineChain(vaddr); chain.Unit != nil {
		l := m.linesFor(chain.Unit)
		file, line := l.At(vaddr)
		// The innermost inlined function owns the pc's line; each caller
		// is at the call site recorded on its callee.
		frames = frames[:0]
		for i := len(chain.Calls) - 1; i >= 0; i-- {
			in := chain.Calls[i]
			frames = append(frames, Frame{Module: base.Module, Address: vaddr, Symbol: in.Name, File: file, Line: line, Inlined: true})
			file, line = l.FileName(in.CallFile), in.CallLine
		}
		base.File, base.Line = file, line
		frames = append(frames, base)
	}
	m.pcs[vaddr] = frames
	return frames
}

func demangled(name string) string {
	// .dynsym names may carry a symbol version: __libc_start_main@GLIBC_2.2.5.
	if i := strings.IndexByte(name, '@'); i > 0 {
		name = name[:i]
	}
	if strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "_R") {
		return demangle.Filter(name)
	}
	return name
}
