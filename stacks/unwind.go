package stacks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// RegRA is the return-address column of x86-64 CFI, which is the
// instruction pointer: a Capture's pc is Regs[RegRA].
const RegRA = symbols.RegRIP

// Capture is what a probe records for unwinding.
type Capture struct {
	PID  int
	Regs map[uint64]uint64 // DWARF register number (symbols.RegRBX, ...) -> value
	// Stack is a copy of the user stack from Regs[symbols.RegRSP] upward.
	Stack []byte
	// Requested is how many bytes the probe tried to copy.
	Requested int
	// Returns maps stack slots whose return address a uretprobe replaced
	// with its trampoline to the original address.
	Returns map[uint64]uint64
}

// Frame is one symbolized frame.
type Frame struct {
	Module  string
	Address uint64 // module-relative (ELF virtual address)
	Symbol  string
	Offset  uint64
	File    string
	Line    int
	Inlined bool
}

// Stack is an unwound stack.
type Stack struct {
	Frames    []Frame
	Truncated bool
	// Reason says why unwinding stopped early.
	Reason string
	// Notes report modules deleted or replaced on disk since they were
	// mapped, and line tables left out for a bound.
	Notes []string
}

// Unwinder unwinds captures. It caches modules by build-id and process
// mappings by pid. Its methods may be called from several goroutines
// (Prepare in the background while events are unwound); they take turns.
type Unwinder struct {
	ProcRoot string
	// Debug says where modules' debug info is looked for (nil: where
	// package symbols looks by default); set it before the first use.
	// Its bounds (MaxDebugInfo, MaxUnits, MaxLineRows) bound each module.
	Debug *symbols.OpenOptions

	// Bounds on what a process can make the unwinder read (limits.go);
	// zero means the default. Set them before the first use.
	//
	// MaxFrames is the most frames a stack is unwound to: corrupt or
	// cyclic stacks stop there. Default DefaultMaxFrames (128).
	MaxFrames int
	// MaxStackBytes is the most bytes of a capture's stack copy that are
	// decoded; a stack that needs more stops there. Default
	// DefaultMaxStackBytes (256 KiB).
	MaxStackBytes int
	// MaxModules is the most files a process may map as code: a process
	// with more gets no stacks. Default DefaultMaxModules (256).
	MaxModules int
	// MaxMappings is the most lines of /proc/PID/maps read: a process
	// with more gets no stacks. Default DefaultMaxMappings (65,536).
	MaxMappings int

	mu      sync.Mutex
	modules map[string]*Module // by build-id, or path when there is none
	byPath  map[string]*Module // path -> module, for processes that exited
	maps    map[int][]Mapping  // per pid
	failed  map[string]error   // modules that could not be opened
	closed  bool
}

// ErrClosed is what Prepare returns, and why Unwind stops, after Close.
var ErrClosed = errors.New("unwinder closed")

// NewUnwinder returns an unwinder reading /proc under procRoot ("" = /proc).
func NewUnwinder(procRoot string) *Unwinder {
	return &Unwinder{ProcRoot: procRoot, modules: map[string]*Module{}, byPath: map[string]*Module{}, maps: map[int][]Mapping{}, failed: map[string]error{}}
}

// Close releases every module. It waits for a Prepare or Unwind under
// way; later calls of Prepare and Unwind do nothing (ErrClosed), and
// Close again returns nil.
func (u *Unwinder) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	u.closed = true
	var errs []error
	for _, m := range u.modules {
		errs = append(errs, m.Close())
	}
	u.modules, u.byPath, u.maps, u.failed = nil, nil, nil, nil
	return errors.Join(errs...)
}

// Prepare reads a process's mappings and indexes its modules ahead of its
// first event, so a process that exits before its events are symbolized
// still gets named frames.
func (u *Unwinder) Prepare(pid int) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	maps, err := u.readMaps(pid)
	if err != nil {
		return err
	}
	u.maps[pid] = maps
	for _, mp := range maps {
		if mp.Exec && mp.Path != "" && mp.Path[0] == '/' {
			u.module(pid, mp)
		}
	}
	return nil
}

// resolve finds the module and module address of a process address,
// re-reading the mappings once when the address is outside the known ones.
func (u *Unwinder) resolve(pid int, addr uint64) (*Module, uint64, error) {
	mp, ok := find(u.maps[pid], addr)
	if !ok {
		maps, err := u.readMaps(pid)
		if errors.Is(err, symbols.ErrLimit) {
			return nil, 0, err
		}
		if err == nil {
			u.maps[pid] = maps
			mp, ok = find(maps, addr)
		}
	}
	if !ok {
		return nil, 0, fmt.Errorf("address %#x is outside every mapping of pid %d", addr, pid)
	}
	if mp.Path == "" || mp.Path[0] != '/' {
		return nil, 0, fmt.Errorf("address %#x is in %s, not in a file", addr, orAnon(mp.Path))
	}
	if !mp.Exec {
		// Data, not code: not a pc, whatever the bytes said.
		return nil, 0, fmt.Errorf("address %#x is in a mapping of %s that is not executable", addr, mp.Path)
	}
	m, err := u.module(pid, mp)
	if err != nil {
		return nil, 0, err
	}
	v, ok := m.vaddr(mp, addr)
	if !ok {
		return nil, 0, fmt.Errorf("address %#x maps to no segment of %s", addr, mp.Path)
	}
	return m, v, nil
}

func orAnon(p string) string {
	if p == "" {
		return "anonymous memory"
	}
	return p
}

// module opens the file a mapping maps. /proc/PID/map_files reaches the
// mapped inode itself, even when the file on disk was deleted or replaced
// since; /proc/PID/root reaches it inside a container's mount namespace;
// the host path is the last resort, for a process that has exited.
func (u *Unwinder) module(pid int, mp Mapping) (*Module, error) {
	if m, ok := u.byPath[mp.Path]; ok {
		return m, nil
	}
	if err, ok := u.failed[mp.Path]; ok {
		return nil, err
	}
	root := u.ProcRoot
	if root == "" {
		root = "/proc"
	}
	hostPath := strings.TrimSuffix(mp.Path, " (deleted)")
	mapFiles := fmt.Sprintf("%s/%d/map_files/%x-%x", root, pid, mp.Start, mp.End)
	candidates := []string{mapFiles}
	if hostPath == mp.Path {
		candidates = append(candidates, fmt.Sprintf("%s/%d/root%s", root, pid, hostPath), hostPath)
	}
	var m *Module
	var err error
	for _, path := range candidates {
		if m, err = OpenModule(path, u.Debug); err == nil {
			break
		}
	}
	if err != nil && hostPath != mp.Path {
		// Whatever is at the path now is another file, likely another
		// build: its symbols and CFI would make up frames.
		err = fmt.Errorf("%s was deleted since it was mapped, and the mapped file can't be read through map_files (that needs CAP_SYS_ADMIN): %w", hostPath, err)
	}
	if err != nil {
		u.failed[mp.Path] = err
		return nil, err
	}
	m.Path = hostPath
	if m.BuildID != "" && hostPath != mp.Path {
		m.Replaced = "deleted since it was mapped"
	} else if m.BuildID != "" {
		// The file as the process sees it, inside its mount namespace.
		onDisk := buildIDOf(fmt.Sprintf("%s/%d/root%s", root, pid, hostPath))
		if onDisk == "" {
			onDisk = buildIDOf(hostPath)
		}
		if onDisk != "" && onDisk != m.BuildID {
			m.Replaced = fmt.Sprintf("replaced on disk (build-id %s, mapped %s)", onDisk, m.BuildID)
		}
	}
	key := m.BuildID
	if key == "" {
		key = mp.Path
	}
	if cached, ok := u.modules[key]; ok {
		m.Close()
		m = cached
	} else {
		u.modules[key] = m
	}
	u.byPath[mp.Path] = m
	return m, nil
}

func buildIDOf(path string) string {
	b, err := symbols.Open(path, nil)
	if err != nil {
		return ""
	}
	defer b.Close()
	return b.BuildID
}

// Unwind walks the captured stack and symbolizes each frame.
func (u *Unwinder) Unwind(c Capture) Stack {
	u.mu.Lock()
	defer u.mu.Unlock()
	var st Stack
	if u.closed {
		st.Truncated, st.Reason = true, ErrClosed.Error()
		return st
	}
	regs := map[uint64]uint64{}
	for k, v := range c.Regs {
		regs[k] = v
	}
	sp0 := regs[symbols.RegRSP]
	stack, cut := c.Stack, false
	if n := u.maxStackBytes(); len(stack) > n {
		stack = stack[:n]
	}
	mem := func(addr uint64) (uint64, bool) {
		if addr < sp0 || addr+8 < addr || addr-sp0 > uint64(len(stack)) || uint64(len(stack))-(addr-sp0) < 8 {
			cut = cut || addr >= sp0 && addr+8 > addr && addr-sp0 < uint64(len(c.Stack)) && uint64(len(c.Stack))-(addr-sp0) >= 8
			return 0, false
		}
		if orig, ok := c.Returns[addr]; ok {
			return orig, true
		}
		return binary.LittleEndian.Uint64(stack[addr-sp0:]), true
	}
	stop := func(format string, args ...any) Stack {
		st.Truncated = true
		st.Reason = fmt.Sprintf(format, args...)
		if cut {
			st.Reason += fmt.Sprintf(" (%v)", &symbols.LimitError{Where: "the stack copy", What: "bytes decoded", Got: int64(len(c.Stack)), Limit: int64(len(stack)), Unit: "bytes", Field: "stacks.Unwinder.MaxStackBytes"})
		}
		return st
	}
	pc := regs[RegRA]
	for depth := 0; ; depth++ {
		if depth == u.maxFrames() {
			return stop("more than %d frames (%s)", depth, "stacks.Unwinder.MaxFrames; raise it to unwind deeper")
		}
		m, vaddr, err := u.resolve(c.PID, pc)
		if err != nil {
			return stop("%v", err)
		}
		// A return address points after the call; look up the call itself.
		lookup := vaddr
		if depth > 0 {
			lookup--
		}
		frames := append([]Frame(nil), m.symbolize(lookup)...) // the module caches them
		if m.Replaced != "" {
			note := fmt.Sprintf("%s was %s", m.Path, m.Replaced)
			if !slices.Contains(st.Notes, note) {
				st.Notes = append(st.Notes, note)
			}
		}
		if note := m.note(); note != "" && !slices.Contains(st.Notes, note) {
			st.Notes = append(st.Notes, note)
		}
		if depth > 0 {
			// Report return addresses as the call site, as gdb does, but keep
			// the offset of the return address.
			for i := range frames {
				frames[i].Address++
				if !frames[i].Inlined {
					frames[i].Offset++
				}
			}
		}
		st.Frames = append(st.Frames, frames...)

		next, done, err := step(m, lookup, depth == 0 && m.atFunctionEntry(lookup), regs, mem)
		if done {
			return st
		}
		if err != nil {
			return stop("%v", err)
		}
		regs = next
		pc = regs[RegRA]
		if pc == 0 {
			return st
		}
	}
}

// step computes the caller's registers from the callee's, by the CFI row
// at pc, or by frame pointers where the module has no CFI. atEntry says
// pc is the first instruction of a function (a probe at its entry).
func step(m *Module, pc uint64, atEntry bool, regs map[uint64]uint64, mem func(uint64) (uint64, bool)) (map[uint64]uint64, bool, error) {
	if !m.HasCFI {
		return framePointerStep(regs, mem, atEntry)
	}
	fde, err := m.fdes.FDEForPC(pc)
	if err != nil {
		return nil, false, fmt.Errorf("no CFI covers %s+%#x", m.Path, pc)
	}
	fc, err := establishFrame(fde, pc)
	if err != nil {
		return nil, false, fmt.Errorf("bad CFI at %s+%#x: %w", m.Path, pc, err)
	}
	var cfa uint64
	switch fc.CFA.Rule {
	case frame.RuleCFA:
		base, ok := regs[fc.CFA.Reg]
		if !ok {
			return nil, false, fmt.Errorf("CFA needs register %d, which is unknown here", fc.CFA.Reg)
		}
		cfa = uint64(int64(base) + fc.CFA.Offset)
	default:
		return nil, false, fmt.Errorf("CFA rule %d at %s+%#x is not supported", fc.CFA.Rule, m.Path, pc)
	}
	ra, ok := fc.Regs[fc.RetAddrReg]
	if !ok || ra.Rule == frame.RuleUndefined {
		// The outermost frame (_start) marks its return address undefined.
		return nil, true, nil
	}
	next := map[uint64]uint64{}
	// Callee-saved registers keep their value unless the row says otherwise.
	for _, r := range []uint64{symbols.RegRBX, symbols.RegRBP, symbols.RegR12, symbols.RegR13, symbols.RegR14, symbols.RegR15} {
		if v, ok := regs[r]; ok {
			next[r] = v
		}
	}
	for r, rule := range fc.Regs {
		switch rule.Rule {
		case frame.RuleOffset:
			v, ok := mem(uint64(int64(cfa) + rule.Offset))
			if !ok {
				if r == fc.RetAddrReg {
					return nil, false, fmt.Errorf("the return address at %#x is past the copied stack", uint64(int64(cfa)+rule.Offset))
				}
				delete(next, r)
				continue
			}
			next[r] = v
		case frame.RuleValOffset:
			next[r] = uint64(int64(cfa) + rule.Offset)
		case frame.RuleRegister:
			if v, ok := regs[rule.Reg]; ok {
				next[r] = v
			} else {
				delete(next, r)
			}
		case frame.RuleSameVal:
			if v, ok := regs[r]; ok {
				next[r] = v
			}
		case frame.RuleUndefined:
			delete(next, r)
		default:
			delete(next, r)
		}
	}
	next[RegRA] = next[fc.RetAddrReg]
	next[symbols.RegRSP] = cfa
	return next, false, nil
}

// framePointerStep is the fallback for modules without CFI.
func framePointerStep(regs map[uint64]uint64, mem func(uint64) (uint64, bool), atEntry bool) (map[uint64]uint64, bool, error) {
	if atEntry {
		// The function has not pushed rbp yet: its return address is at
		// sp and rbp is still its caller's frame pointer. Walking rbp from
		// here would skip the caller.
		sp := regs[symbols.RegRSP]
		ra, ok := mem(sp)
		if !ok {
			return nil, false, fmt.Errorf("the return address at %#x is past the copied stack", sp)
		}
		next := map[uint64]uint64{RegRA: ra, symbols.RegRSP: sp + 8}
		if bp, ok := regs[symbols.RegRBP]; ok {
			next[symbols.RegRBP] = bp
		}
		return next, false, nil
	}
	bp, ok := regs[symbols.RegRBP]
	if !ok || bp == 0 {
		return nil, false, errors.New("no CFI and no frame pointer")
	}
	savedBP, ok1 := mem(bp)
	ra, ok2 := mem(bp + 8)
	if !ok1 || !ok2 {
		return nil, false, fmt.Errorf("frame pointer %#x is outside the copied stack", bp)
	}
	next := map[uint64]uint64{symbols.RegRBP: savedBP, RegRA: ra, symbols.RegRSP: bp + 16}
	return next, false, nil
}

// Symbolize names the code at a process address: a C function that Lua
// calls, whose address a Lua frame holds. It returns nil when no module
// of the process maps the address.
func (u *Unwinder) Symbolize(pid int, addr uint64) []Frame {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil
	}
	m, vaddr, err := u.resolve(pid, addr)
	if err != nil {
		return nil
	}
	return append([]Frame(nil), m.symbolize(vaddr)...)
}
