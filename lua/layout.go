package lua

import (
	"debug/dwarf"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Sentinel errors of Find; test with errors.Is.
var (
	// ErrNoLuaModule: the process runs no lua-nginx-module, so there are
	// no Lua frames to read (not a failure of the trace).
	ErrNoLuaModule = errors.New("no lua-nginx-module in the process")
	// ErrNoDebugInfo: a part the walk needs has no DWARF; C frames still
	// print.
	ErrNoDebugInfo = errors.New("no debug info for the Lua walk")
	// ErrNotLuaJIT: the Lua library is not a LuaJIT 2.1 GC64 build the
	// walk knows.
	ErrNotLuaJIT = errors.New("not a LuaJIT 2.1 GC64 build")
)

// Layout is what the BPF walk needs: where nginx's globals are in the
// traced process, and the offsets of the members it follows, all read
// from DWARF. Offsets are in bytes.
type Layout struct {
	// Addresses in the traced process (load bias applied).
	CycleAddr      uint64 // &ngx_cycle (a pointer variable)
	HTTPModuleAddr uint64 // &ngx_http_module
	LuaModuleAddr  uint64 // &ngx_http_lua_module

	// nginx and lua-nginx-module.
	CycleConfCtx    int64 // ngx_cycle_t.conf_ctx
	ModuleCtxIndex  int64 // ngx_module_t.ctx_index
	ModuleIndex     int64 // ngx_module_t.index
	ConfCtxMainConf int64 // ngx_http_conf_ctx_t.main_conf
	MainConfLua     int64 // ngx_http_lua_main_conf_t.lua

	// LuaJIT.
	StateGlref, StateBase, StateStack, StateCframe int64 // lua_State
	GlobalCurL, GlobalVMState, GlobalJITBase       int64 // global_State

	// GlobalToJIT is added to a global_State pointer to reach its
	// jit_State: both are members of one GG_State.
	GlobalToJIT int64

	JITTrace     int64 // jit_State.trace (GCRef *)
	TraceStartPt int64 // GCtrace.startpt
	TraceStartPC int64 // GCtrace.startpc
	FuncFFID     int64 // GCfuncL.ffid (u8)
	FuncPC       int64 // GCfuncL.pc: the bytecode of a Lua function
	FuncCF       int64 // GCfuncC.f: the C function
	ProtoSize    int64 // sizeof(GCproto): bytecode follows the proto
	StrLen       int64 // GCstr.len
	StrSize      int64 // sizeof(GCstr): the bytes follow the header

	// GCproto members the walk copies per frame.
	ProtoSizeBC, ProtoChunkName, ProtoFirstLine, ProtoNumLine, ProtoLineInfo int64

	// GCproto members a Namer reads: the constants, the upvalue and
	// local variable names, all inside the proto's sizept bytes.
	ProtoK, ProtoSizeKGC, ProtoSizePT, ProtoSizeUV, ProtoUVInfo, ProtoVarInfo int64

	// ProtoLo and ProtoHi bound the proto members the walk copies: one
	// read per frame.
	ProtoLo, ProtoHi int64

	// MaxFrames bounds the walk; a deeper stack is marked truncated.
	MaxFrames int

	// Library and Module name the LuaJIT library and lua-nginx-module,
	// for messages.
	Library, Module string
}

// DefaultMaxFrames bounds the Lua frames a hit copies. debug.traceback()
// prints 21 levels before it elides.
const DefaultMaxFrames = 24

// Find reads the Layout of the process pid (its master, or any worker:
// they share the layout) whose executable and modules img describes.
// It opens only the modules it needs. ErrNoLuaModule means there is no
// Lua to read; ErrNoDebugInfo, that Lua frames cannot be read and why.
func Find(img *symbols.Image, procRoot string, pid int) (*Layout, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	mod, modAddr, err := findDefining(img, "ngx_http_lua_module", "ngx_http_lua_module")
	if err != nil {
		return nil, err
	}
	lib, _, err := findDefining(img, "lua_resume", "luajit")
	if err != nil {
		return nil, fmt.Errorf("%w: lua-nginx-module is loaded, but no LuaJIT library defining lua_resume was found", ErrNotLuaJIT)
	}
	l := &Layout{MaxFrames: DefaultMaxFrames, Library: symbols.ModuleName(lib), Module: symbols.ModuleName(mod)}
	if !lib.HasDWARF() {
		return nil, fmt.Errorf("%w: %s has no DWARF, so the Lua stack cannot be walked (its struct layouts come from there): install its debug symbols (Debian: libluajit2-5.1-2-dbgsym), or point --debug-dir or DEBUGINFOD_URLS at them; C frames still print", ErrNoDebugInfo, l.Library)
	}
	if pid == 0 {
		return nil, fmt.Errorf("%w: Lua frames need the process (-p PID): the walk starts from nginx's globals at their addresses in it", ErrNoDebugInfo)
	}
	main := img.Main()
	cycleAddr, err := symbolAddr(main, "ngx_cycle")
	if err != nil {
		return nil, err
	}
	httpAddr, err := symbolAddr(main, "ngx_http_module")
	if err != nil {
		return nil, err
	}
	maps, err := stacks.ReadMaps(procRoot, pid)
	if err != nil {
		return nil, fmt.Errorf("lua: %w", err)
	}
	mainBias, err := bias(main, maps)
	if err != nil {
		return nil, err
	}
	modBias, err := bias(mod, maps)
	if err != nil {
		return nil, err
	}
	l.CycleAddr, l.HTTPModuleAddr, l.LuaModuleAddr = cycleAddr+mainBias, httpAddr+mainBias, modAddr+modBias

	r := reader{img: img, lib: lib}
	l.CycleConfCtx = r.field("ngx_cycle_t", "conf_ctx", 8)
	l.ModuleCtxIndex = r.field("ngx_module_t", "ctx_index", 8)
	l.ModuleIndex = r.field("ngx_module_t", "index", 8)
	l.ConfCtxMainConf = r.field("ngx_http_conf_ctx_t", "main_conf", 8)
	l.MainConfLua = r.field("ngx_http_lua_main_conf_t", "lua", 8)

	l.StateGlref = r.libField("lua_State", "glref", 8)
	l.StateBase = r.libField("lua_State", "base", 8)
	l.StateStack = r.libField("lua_State", "stack", 8)
	l.StateCframe = r.libField("lua_State", "cframe", 8)
	l.GlobalCurL = r.libField("global_State", "cur_L", 8)
	l.GlobalVMState = r.libField("global_State", "vmstate", 4)
	l.GlobalJITBase = r.libField("global_State", "jit_base", 8)
	l.GlobalToJIT = r.libField("GG_State", "J", 0) - r.libField("GG_State", "g", 0)
	l.JITTrace = r.libField("jit_State", "trace", 8)
	l.TraceStartPt = r.libField("GCtrace", "startpt", 8)
	l.TraceStartPC = r.libField("GCtrace", "startpc", 8)
	l.FuncFFID = r.libField("GCfuncL", "ffid", 1)
	l.FuncPC = r.libField("GCfuncL", "pc", 8)
	l.FuncCF = r.libField("GCfuncC", "f", 8)
	l.ProtoSize = r.libSize("GCproto")
	l.ProtoSizeBC = r.libField("GCproto", "sizebc", 4)
	l.ProtoChunkName = r.libField("GCproto", "chunkname", 8)
	l.ProtoFirstLine = r.libField("GCproto", "firstline", 4)
	l.ProtoNumLine = r.libField("GCproto", "numline", 4)
	l.ProtoLineInfo = r.libField("GCproto", "lineinfo", 8)
	l.ProtoK = r.libField("GCproto", "k", 8)
	l.ProtoSizeKGC = r.libField("GCproto", "sizekgc", 4)
	l.ProtoSizePT = r.libField("GCproto", "sizept", 4)
	l.ProtoSizeUV = r.libField("GCproto", "sizeuv", 1)
	l.ProtoUVInfo = r.libField("GCproto", "uvinfo", 8)
	l.ProtoVarInfo = r.libField("GCproto", "varinfo", 8)
	l.StrLen = r.libField("GCstr", "len", 4)
	l.StrSize = r.libSize("GCstr")
	if r.err != nil {
		return nil, r.err
	}
	l.ProtoLo, l.ProtoHi = l.ProtoSizeBC, l.ProtoSizeBC+4
	for _, f := range []struct{ off, size int64 }{{l.ProtoChunkName, 8}, {l.ProtoFirstLine, 4}, {l.ProtoNumLine, 4}, {l.ProtoLineInfo, 8}} {
		l.ProtoLo, l.ProtoHi = min(l.ProtoLo, f.off), max(l.ProtoHi, f.off+f.size)
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	return l, nil
}

// check refuses layouts the record cannot hold: another LuaJIT than the
// 2.1 GC64 one the walk was written for.
func (l *Layout) check() error {
	if l.ProtoHi-l.ProtoLo > protoWindow {
		return fmt.Errorf("%w: %s: GCproto's line and chunk members span %d bytes, the walk copies %d", ErrNotLuaJIT, l.Library, l.ProtoHi-l.ProtoLo, protoWindow)
	}
	for _, end := range []int64{l.FuncFFID + 1, l.FuncPC + 8, l.FuncCF + 8} {
		if end > fnWindow {
			return fmt.Errorf("%w: %s: GCfunc members end at byte %d, the walk copies %d", ErrNotLuaJIT, l.Library, end, fnWindow)
		}
	}
	if l.MaxFrames < 1 || l.MaxFrames > maxFramesLimit {
		return fmt.Errorf("lua: %d frames: want 1 to %d", l.MaxFrames, maxFramesLimit)
	}
	return nil
}

// reader reads member offsets; the first error sticks.
type reader struct {
	img *symbols.Image
	lib *symbols.Binary
	err error
}

func (r *reader) field(typ, name string, size int64) int64 {
	if r.err != nil {
		return 0
	}
	t, _, err := r.img.Type(typ)
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrNoDebugInfo, err)
		return 0
	}
	return r.member(t, typ, name, size, "nginx and its modules")
}

func (r *reader) libField(typ, name string, size int64) int64 {
	if r.err != nil {
		return 0
	}
	t, err := r.lib.Type(typ)
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrNotLuaJIT, err)
		return 0
	}
	return r.member(t, typ, name, size, symbols.ModuleName(r.lib))
}

func (r *reader) member(t dwarf.Type, typ, name string, size int64, where string) int64 {
	ms, err := symbols.Members(t)
	if err != nil {
		r.err = fmt.Errorf("%w: %s in %s: %v", ErrNotLuaJIT, typ, where, err)
		return 0
	}
	for _, m := range ms {
		if m.Name != name {
			continue
		}
		if m.BitSize != 0 || size != 0 && m.Size != size {
			r.err = fmt.Errorf("%w: %s.%s in %s is %d bytes, want %d", ErrNotLuaJIT, typ, name, where, m.Size, size)
			return 0
		}
		return m.ByteOffset()
	}
	r.err = fmt.Errorf("%w: %s in %s has no member %s", ErrNotLuaJIT, typ, where, name)
	return 0
}

func (r *reader) libSize(typ string) int64 {
	if r.err != nil {
		return 0
	}
	t, err := r.lib.Type(typ)
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrNotLuaJIT, err)
		return 0
	}
	return symbols.Underlying(t).Size()
}

// FindModule returns the binary that holds lua-nginx-module: a dynamic
// module, or the executable of a static build. ErrNoLuaModule says
// there is none.
func FindModule(img *symbols.Image) (*symbols.Binary, error) {
	b, _, err := findDefining(img, "ngx_http_lua_module", "ngx_http_lua_module")
	return b, err
}

// findDefining returns the binary that defines the symbol: the executable
// (a static build, as OpenResty's own), else a module whose file name
// contains hint.
func findDefining(img *symbols.Image, symbol, hint string) (*symbols.Binary, uint64, error) {
	main := img.Main()
	if addr, err := symbolAddr(main, symbol); err == nil {
		return main, addr, nil
	}
	var names []string
	for _, b := range img.Opened() {
		if b != main && strings.Contains(filepath.Base(symbols.ModuleName(b)), hint) {
			names = append(names, b.Path)
		}
	}
	for _, f := range img.Unopened() {
		if strings.Contains(filepath.Base(f.MappedPath), hint) {
			names = append(names, f.MappedPath)
		}
	}
	for _, n := range names {
		b, err := img.Module(n)
		if err != nil {
			continue
		}
		if addr, err := symbolAddr(b, symbol); err == nil {
			return b, addr, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: no module defines %s", ErrNoLuaModule, symbol)
}

// symbolAddr is the ELF address of a defined symbol, from .dynsym (which
// stripped binaries keep) or .symtab.
func symbolAddr(b *symbols.Binary, name string) (uint64, error) {
	f := b.ELF()
	for _, list := range []func() ([]elf.Symbol, error){f.DynamicSymbols, f.Symbols} {
		syms, _ := list()
		for _, s := range syms {
			if s.Name == name && s.Section != elf.SHN_UNDEF && s.Value != 0 {
				return s.Value, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: %s does not define %s", ErrNoDebugInfo, symbols.ModuleName(b), name)
}

// bias is what the process added to the binary's ELF addresses: the
// start of the mapping of its first loadable segment, less the segment's
// page-aligned address.
func bias(b *symbols.Binary, maps []stacks.Mapping) (uint64, error) {
	path := b.MappedPath
	if path == "" {
		path = b.Path
	}
	f := b.ELF()
	if f.Type == elf.ET_EXEC {
		return 0, nil
	}
	const page = 4096
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		for _, m := range maps {
			if strings.TrimSuffix(m.Path, " (deleted)") == path && m.Offset == p.Off&^(page-1) {
				return m.Start - p.Vaddr&^(page-1), nil
			}
		}
		break
	}
	return 0, fmt.Errorf("lua: %s is not mapped in the process as %s (%w)", symbols.ModuleName(b), path, os.ErrNotExist)
}
