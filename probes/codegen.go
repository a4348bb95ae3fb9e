package probes

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// ptRegsOffset maps DWARF register numbers (package symbols' numbering)
// to their offsets in x86-64's struct pt_regs (arch/x86/include/asm/ptrace.h).
var ptRegsOffset = map[int]int16{
	symbols.RegRAX: 80,
	symbols.RegRDX: 96,
	symbols.RegRCX: 88,
	symbols.RegRBX: 40,
	symbols.RegRSI: 104,
	symbols.RegRDI: 112,
	symbols.RegRBP: 32,
	symbols.RegRSP: 152,
	symbols.RegR8:  72,
	symbols.RegR9:  64,
	symbols.RegR10: 56,
	symbols.RegR11: 48,
	symbols.RegR12: 24,
	symbols.RegR13: 16,
	symbols.RegR14: 8,
	symbols.RegR15: 0,
	symbols.RegRIP: 128, // ip, for stack captures
}

// Registers with fixed roles in generated programs.
const (
	regCtx   = asm.R6 // struct pt_regs *
	regEvent = asm.R7 // ringbuf record
	regBase  = asm.R8 // the current base of a plan
	regSaved = asm.R9 // saved entry roots (return probes), or NULL
)

// bpf_ringbuf_query and bpf_ringbuf_submit flags.
const (
	rbAvailData   = 0 // BPF_RB_AVAIL_DATA
	rbNoWakeup    = 1 // BPF_RB_NO_WAKEUP
	rbForceWakeup = 2 // BPF_RB_FORCE_WAKEUP
)

// maxSavedRoots bounds what an entry probe saves for its return probe.
const maxSavedRoots = 8

// savedKeySize: {u64 pid_tgid, u64 function id, u64 entry sp}. The stack
// pointer makes the key a call's own: a return finds what its entry
// saved (sp at entry is sp after the return, less the return address),
// never a nested or earlier call's, so nothing needs consuming: a return
// whose filter drops the hit costs no map call at all, and an entry
// finds its slot from the previous call at the same depth and writes it
// in place. The map is an LRU, so slots of exited threads age out.
const savedKeySize = 24

// rootKey identifies a value saved at entry.
type rootKey struct {
	reg int
	add int64
}

// program describes one BPF program to generate.
type program struct {
	probeID uint32
	emit    bool // write an event
	layout  layout
	// isReturn: a return probe, attached with a uretprobe.
	isReturn bool
	// saveRoots: an entry program stores these for the return probe.
	saveRoots []rootKey
	// savedRoots: a return program reads non-return roots from here.
	savedRoots []rootKey
	functionID uint64
	// wakeupBytes: submit wakes the reader once this much data is pending.
	wakeupBytes int

	filter processFilter
	// where: the user's filter; nil passes every hit.
	where      Cond
	aggregates []AggregateUpdate
	// luaChunk filters after the Lua walk: a hit that fails is discarded.
	luaChunk []LuaChunkMatch
	// luaState is where the Lua walk starts, nil for the running one.
	luaState *symbols.Plan
	// returns locate return addresses replaced by uretprobes, for stacks.
	returns returnOffsets
	// prologue, when set, runs first and decides whether the hit counts
	// further: watch and diff programs compute their values there.
	prologue func(e *emitter) error
}

// processFilter restricts events to one process and its children, so a
// master's new workers after a reload stay traced.
type processFilter struct {
	tgid            uint32 // 0: every process of the binary
	realParentOff   int16  // task_struct.real_parent
	tgidOff         int16  // task_struct.tgid
	includeChildren bool
	// taskBTF: the kernel lets a uprobe program read current's parent by
	// direct loads through bpf_get_current_task_btf (5.11 and later),
	// a few nanoseconds instead of two bpf_probe_read_kernel calls; every
	// hit in a worker pays for this check.
	taskBTF bool
}

// mapFDs are the file descriptors of the maps programs use.
type mapFDs struct {
	events, hits, lost, saved int // file descriptors
	scratch                   int // aggregation keys are built here
	aggregations              map[*Aggregation]int
	watchParams, watchPending int
	watchHits                 int
	diffSeen                  int
}

type emitter struct {
	insns   asm.Instructions
	pending []string
	labels  int
	// prefixes maps a plan's root and leading loads to the stack slot
	// that caches the pointer they produce, for prefixes shared by values.
	prefixes map[string]int16
	cached   map[int16]bool // slots already written by an earlier value
	// values maps a filter's final reads (valueKey) to where its start
	// left them; only the filter's comparisons use it.
	values map[string]cachedValue
}

// Stack layout below the frame pointer: the saved-roots key and values
// (-savedKeySize-8*maxSavedRoots .. -1) come first, the prefix cache below them.
const (
	cacheTop      = -savedKeySize - 8*maxSavedRoots - 8
	maxCacheSlots = 18
)

func prefixKey(r symbols.Root, loads []int64) string {
	return fmt.Sprint(r, loads)
}

// planPrefixes assigns cache slots to load prefixes used by two or more
// values, so each shared pointer is read once per hit.
func (e *emitter) planPrefixes(slots []valueSlot) {
	uses := map[string]int{}
	var order []string
	for _, s := range slots {
		for k := 1; k <= len(s.plan.Loads); k++ {
			key := prefixKey(s.plan.Root, s.plan.Loads[:k])
			if uses[key] == 0 {
				order = append(order, key)
			}
			uses[key]++
		}
	}
	e.prefixes = map[string]int16{}
	e.cached = map[int16]bool{}
	for _, key := range order {
		if uses[key] < 2 || len(e.prefixes) == maxCacheSlots {
			continue
		}
		off := int16(cacheTop - 8*len(e.prefixes))
		e.prefixes[key] = off
		// A slot stays 0 if its loads fault: later reads through it fault too.
		// asm.StoreImm (cilium/ebpf v0.22.0, asm/load_store.go) returns an
		// InvalidOpCode instruction for asm.DWord, which fails to marshal,
		// so a DWord store of a constant goes through a zeroed register.
		e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
}

func (e *emitter) label(prefix string) string {
	e.labels++
	return fmt.Sprintf("%s_%d", prefix, e.labels)
}

func (e *emitter) emit(ins ...asm.Instruction) {
	for _, in := range ins {
		// Several labels on one spot: a no-op carries all but the last.
		for len(e.pending) > 1 {
			e.insns = append(e.insns, asm.Mov.Reg(regCtx, regCtx).WithSymbol(e.pending[0]))
			e.pending = e.pending[1:]
		}
		if len(e.pending) == 1 {
			in = in.WithSymbol(e.pending[0])
			e.pending = e.pending[:0]
		}
		e.insns = append(e.insns, in)
	}
}

// mark puts label on the next instruction.
func (e *emitter) mark(label string) { e.pending = append(e.pending, label) }

// generate builds the instructions of one program.
func generate(p program, m mapFDs) (asm.Instructions, error) {
	if err := p.layout.check(); err != nil {
		return nil, err
	}
	e := &emitter{}
	e.emit(asm.Mov.Reg(regCtx, asm.R1))
	e.processFilter(p.filter)
	e.countHit(p, m)

	// A return program looks its entry's roots up before the filter only
	// when the filter reads them; otherwise only a hit the filter keeps
	// pays for the lookup.
	lookupLate := p.isReturn && len(p.savedRoots) > 0 && p.prologue == nil && p.where != nil && !filterReadsSaved(p, p.where)
	if p.isReturn && len(p.savedRoots) > 0 && !lookupLate {
		e.lookupSaved(p, m)
	} else if p.isReturn {
		e.emit(asm.Mov.Imm(regSaved, 0))
	}
	if len(p.saveRoots) > 0 {
		if err := e.saveRoots(p, m); err != nil {
			return nil, err
		}
	}
	if p.prologue != nil {
		// A prologue sets the pseudo registers its kind uses; values may
		// read the others (a watch's RegPrevPoint), and verifiers before
		// 5.12 or so refuse a read of a stack slot never written.
		e.emit(asm.Mov.Imm(asm.R1, 0))
		for reg := RegObject; reg <= RegPrevPoint; reg++ {
			e.emit(asm.StoreMem(asm.RFP, pseudo(reg), asm.R1, asm.DWord))
		}
		if err := p.prologue(e); err != nil {
			return nil, err
		}
	}
	if p.where != nil {
		matched := e.label("matched")
		if err := e.hoistFilterReads(p, p.where); err != nil {
			return nil, err
		}
		if err := e.cond(p, p.where, matched, "filtered"); err != nil {
			return nil, err
		}
		e.mark(matched)
		e.values = nil // the fault mask and span buffer are reused below
		if lookupLate {
			e.lookupSaved(p, m)
		}
	}
	for _, u := range p.aggregates {
		if err := e.aggregate(p, m, u); err != nil {
			return nil, err
		}
	}
	if p.emit {
		e.emit(
			asm.LoadMapPtr(asm.R1, m.events),
			asm.Mov.Imm(asm.R2, int32(p.layout.size)),
			asm.Mov.Imm(asm.R3, 0),
			asm.FnRingbufReserve.Call(),
			asm.JNE.Imm(asm.R0, 0, "reserved"),
		)
		e.count(m.lost, p.probeID)
		e.emit(asm.Ja.Label("exit"))
		e.mark("reserved")
		e.emit(
			asm.Mov.Reg(regEvent, asm.R0),
			asm.StoreImm(regEvent, hdrProbeID, int64(p.probeID), asm.Word),
			asm.StoreImm(regEvent, hdrProbeID+4, 0, asm.Word),
			asm.FnGetCurrentPidTgid.Call(),
			asm.StoreMem(regEvent, hdrPidTgid, asm.R0, asm.DWord),
			asm.FnKtimeGetNs.Call(),
			asm.StoreMem(regEvent, hdrTime, asm.R0, asm.DWord),
		)
		e.planPrefixes(p.layout.slots)
		for _, s := range p.layout.slots {
			if err := e.value(p, s); err != nil {
				return nil, err
			}
		}
		if p.layout.lua != nil {
			if err := e.luaWalk(p, p.layout.luaAt, p.layout.lua); err != nil {
				return nil, err
			}
			if len(p.luaChunk) > 0 {
				if err := e.luaChunkFilter(p.layout.luaAt, p.layout.lua, p.luaChunk, "lua_discarded"); err != nil {
					return nil, err
				}
			}
		}
		if p.layout.stackBytes > 0 {
			e.copyStack(p.layout)
			e.copyReturns(p.layout, p.returns)
		}
		// Wake the reader only once wakeupBytes are pending: a wakeup per
		// event costs more than the event. The reader polls between wakeups.
		e.emit(
			asm.LoadMapPtr(asm.R1, m.events),
			asm.Mov.Imm(asm.R2, rbAvailData),
			asm.FnRingbufQuery.Call(),
			asm.Mov.Imm(asm.R2, rbNoWakeup),
			asm.JLT.Imm(asm.R0, int32(p.wakeupBytes), "submit"),
			asm.Mov.Imm(asm.R2, rbForceWakeup),
		)
		e.mark("submit")
		e.emit(
			asm.Mov.Reg(asm.R1, regEvent),
			asm.FnRingbufSubmit.Call(),
		)
	}
	if p.where != nil {
		e.mark("filtered")
	}
	if p.emit && p.layout.lua != nil && len(p.luaChunk) > 0 {
		e.mark("lua_discarded")
	}
	e.mark("exit")
	e.emit(asm.Mov.Imm(asm.R0, 0), asm.Return())
	return e.insns, nil
}

func (e *emitter) processFilter(f processFilter) {
	if f.tgid == 0 {
		return
	}
	e.emit(
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.JEq.Imm(asm.R0, int32(f.tgid), "traced"),
	)
	if f.includeChildren && f.taskBTF {
		e.emit(parentTgidBTF(f.realParentOff, f.tgidOff)...)
		e.emit(asm.JEq.Imm(asm.R0, int32(f.tgid), "traced"))
	} else if f.includeChildren {
		e.emit(
			asm.FnGetCurrentTask.Call(),
			asm.Mov.Reg(asm.R3, asm.R0),
			asm.Add.Imm(asm.R3, int32(f.realParentOff)),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "exit"),
			asm.LoadMem(asm.R3, asm.RFP, -8, asm.DWord),
			asm.Add.Imm(asm.R3, int32(f.tgidOff)),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -8),
			asm.Mov.Imm(asm.R2, 4),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "exit"),
			asm.LoadMem(asm.R0, asm.RFP, -8, asm.Word),
			asm.JEq.Imm(asm.R0, int32(f.tgid), "traced"),
		)
	}
	e.emit(asm.Ja.Label("exit"))
	e.mark("traced")
}

// parentTgidBTF sets R0 to current->real_parent->tgid by direct loads
// from the BTF task pointer (R3 clobbered).
func parentTgidBTF(realParentOff, tgidOff int16) asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentTaskBtf.Call(),
		asm.LoadMem(asm.R3, asm.R0, realParentOff, asm.DWord),
		asm.LoadMem(asm.R0, asm.R3, tgidOff, asm.Word),
	}
}

// count adds one to a per-CPU counter indexed by probe id.
func (e *emitter) count(mapFD int, probeID uint32) {
	skip := e.label("count")
	e.emit(
		asm.StoreImm(asm.RFP, -4, int64(probeID), asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	e.mark(skip)
}

func (e *emitter) countHit(p program, m mapFDs) { e.count(m.hits, p.probeID) }

// savedKey writes {pid_tgid, function id, entry sp} at fp-savedKeySize.
func (e *emitter) savedKey(p program) {
	e.emit(
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, -savedKeySize, asm.R0, asm.DWord),
		asm.LoadImm(asm.R0, int64(p.functionID), asm.DWord),
		asm.StoreMem(asm.RFP, -savedKeySize+8, asm.R0, asm.DWord),
		asm.LoadMem(asm.R0, regCtx, ptRegsOffset[symbols.RegRSP], asm.DWord),
	)
	if p.isReturn {
		e.emit(asm.Add.Imm(asm.R0, -8)) // ret popped the return address
	}
	e.emit(asm.StoreMem(asm.RFP, -savedKeySize+16, asm.R0, asm.DWord))
}

// savedMapArgs sets r1 and r2 for a call on the saved-roots map with this
// thread's and function's key.
func (e *emitter) savedMapArgs(p program, m mapFDs) {
	e.savedKey(p)
	e.emit(
		asm.LoadMapPtr(asm.R1, m.saved),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -savedKeySize),
	)
}

func (e *emitter) lookupSaved(p program, m mapFDs) {
	e.savedMapArgs(p, m)
	e.emit(
		asm.FnMapLookupElem.Call(),
		asm.Mov.Reg(regSaved, asm.R0),
	)
}

// saveRoots stores the entry values of the roots the return probe needs;
// by the time the function returns, argument registers are clobbered.
func (e *emitter) saveRoots(p program, m mapFDs) error {
	if len(p.saveRoots) > maxSavedRoots {
		return fmt.Errorf("a return probe needs %d saved arguments, at most %d are supported", len(p.saveRoots), maxSavedRoots)
	}
	const valueOff = -savedKeySize - 8*maxSavedRoots
	// The previous call at this depth left its slot: write it in place,
	// one lookup and no update (an update allocates and links a node).
	update, done := e.label("save_update"), e.label("save_done")
	e.savedMapArgs(p, m)
	e.emit(
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, update),
	)
	for i, r := range p.saveRoots {
		if err := e.rootValue(r); err != nil {
			return err
		}
		e.emit(asm.StoreMem(asm.R0, int16(8*i), asm.R1, asm.DWord))
	}
	e.emit(asm.Ja.Label(done))
	e.mark(update)
	for i, r := range p.saveRoots {
		if err := e.rootValue(r); err != nil {
			return err
		}
		e.emit(asm.StoreMem(asm.RFP, int16(valueOff+8*i), asm.R1, asm.DWord))
	}
	// The map update reads the whole value: verifiers before 5.12 or so
	// refuse to let a helper read stack bytes never written ("invalid
	// indirect read from stack"), so the unused slots are zeroed.
	if len(p.saveRoots) < maxSavedRoots {
		e.emit(asm.Mov.Imm(asm.R1, 0))
		for i := len(p.saveRoots); i < maxSavedRoots; i++ {
			e.emit(asm.StoreMem(asm.RFP, int16(valueOff+8*i), asm.R1, asm.DWord))
		}
	}
	e.savedMapArgs(p, m)
	e.emit(
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, valueOff),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
	)
	e.mark(done) // on the next instruction emitted
	return nil
}

// rootValue loads a saved root's entry value into R1.
func (e *emitter) rootValue(r rootKey) error {
	off, ok := ptRegsOffset[r.reg]
	if !ok {
		return fmt.Errorf("register %d has no pt_regs slot", r.reg)
	}
	e.emit(asm.LoadMem(asm.R1, regCtx, off, asm.DWord))
	if r.add != 0 {
		e.emit(asm.Add.Imm(asm.R1, int32(r.add)))
	}
	return nil
}

// value evaluates one plan into its slot.
func (e *emitter) value(p program, s valueSlot) error {
	plan := s.plan
	slot := int16(s.offset)
	data := slot + slotHeader
	done := e.label("done")
	fault := e.label("fault")
	noEntry := e.label("noentry")

	if plan.Root.Unavailable != "" {
		// Nothing to read here: the value is reported unavailable.
		e.emit(
			asm.StoreImm(regEvent, slot+slotStatus, statusUnavailable, asm.Byte),
			asm.StoreImm(regEvent, slot+slotLen, 0, asm.Word),
			asm.Mov.Imm(asm.R0, 0),
		)
		return nil
	}

	// The verifier rejects unreachable code: emit the fault and no-entry
	// tails only when something jumps to them.
	usesNoEntry := false
	usesFault := len(plan.Loads) > 0 || plan.Read.Kind != symbols.ReadValue

	// Base: the longest cached prefix, or the root.
	first := 0
	for k := len(plan.Loads); k > 0; k-- {
		if off, ok := e.prefixes[prefixKey(plan.Root, plan.Loads[:k])]; ok && e.cached[off] {
			e.emit(asm.LoadMem(regBase, asm.RFP, off, asm.DWord))
			first = k
			break
		}
	}
	if first == 0 {
		used, err := e.root(p, plan, noEntry)
		if err != nil {
			return err
		}
		usesNoEntry = used
	}

	// Pointer loads.
	for i := first; i < len(plan.Loads); i++ {
		e.emit(asm.StoreImm(regEvent, slot+slotStep, int64(i), asm.Byte))
		e.probeRead(data, 8, plan.Loads[i], fault)
		e.emit(asm.LoadMem(regBase, regEvent, data, asm.DWord))
		if off, ok := e.prefixes[prefixKey(plan.Root, plan.Loads[:i+1])]; ok && !e.cached[off] {
			e.emit(asm.StoreMem(asm.RFP, off, regBase, asm.DWord))
			e.cached[off] = true
		}
	}
	e.emit(asm.StoreImm(regEvent, slot+slotStep, int64(len(plan.Loads)), asm.Byte))

	// Final read.
	r := plan.Read
	switch r.Kind {
	case symbols.ReadValue:
		e.emit(
			asm.StoreMem(regEvent, data, regBase, asm.DWord),
			asm.StoreImm(regEvent, slot+slotLen, 8, asm.Word),
		)
	case symbols.ReadMemory:
		e.probeRead(data, r.Size, r.Offset, fault)
		e.emit(asm.StoreImm(regEvent, slot+slotLen, int64(r.Size), asm.Word))
	case symbols.ReadCString:
		e.emit(
			asm.JLT.Imm(regBase, nullPage, fault),
			asm.Mov.Reg(asm.R1, regEvent),
			asm.Add.Imm(asm.R1, int32(data)),
			asm.Mov.Imm(asm.R2, int32(r.Cap)),
			asm.Mov.Reg(asm.R3, regBase),
			asm.FnProbeReadUserStr.Call(),
			asm.JSLT.Imm(asm.R0, 0, fault),
			asm.StoreMem(regEvent, slot+slotLen, asm.R0, asm.Word),
		)
	case symbols.ReadNgxStr:
		e.probeRead(data, 16, r.Offset, fault)
		clamp := e.label("clamp")
		e.emit(
			asm.LoadMem(asm.R2, regEvent, data, asm.DWord),
			asm.JLE.Imm(asm.R2, int32(r.Cap), clamp),
			asm.Mov.Imm(asm.R2, int32(r.Cap)),
		)
		e.mark(clamp)
		empty := e.label("empty")
		e.emit(
			asm.Mov.Reg(regBase, asm.R2),  // keep the length read
			asm.JEq.Imm(asm.R2, 0, empty), // an empty string has no data to read
			asm.Mov.Reg(asm.R1, regEvent),
			asm.Add.Imm(asm.R1, int32(data+16)),
			asm.LoadMem(asm.R3, regEvent, data+8, asm.DWord),
			asm.JLT.Imm(asm.R3, nullPage, fault),
			asm.FnProbeReadUser.Call(),
			asm.JNE.Imm(asm.R0, 0, fault),
		)
		e.mark(empty)
		e.emit(
			asm.Add.Imm(regBase, 16),
			asm.StoreMem(regEvent, slot+slotLen, regBase, asm.Word),
		)
	default:
		return fmt.Errorf("%s: unknown read kind %d", plan.Expr, r.Kind)
	}
	e.emit(asm.StoreImm(regEvent, slot+slotStatus, statusOK, asm.Byte))
	if usesNoEntry {
		e.emit(asm.Ja.Label(done))
		e.mark(noEntry)
		e.emit(
			asm.StoreImm(regEvent, slot+slotStatus, statusNoEntry, asm.Byte),
			asm.StoreImm(regEvent, slot+slotLen, 0, asm.Word),
		)
	}
	if usesFault {
		e.emit(asm.Ja.Label(done))
		e.mark(fault)
		e.emit(
			asm.StoreImm(regEvent, slot+slotStatus, statusFault, asm.Byte),
			asm.StoreImm(regEvent, slot+slotLen, 0, asm.Word),
		)
	}
	e.mark(done)
	e.emit(asm.Mov.Imm(asm.R0, 0))
	return nil
}

// copyStack records the unwinder's registers and copies the stack from
// sp upward. Near the top of the stack a full copy would cross the end of
// the mapping and fail, so it falls back to chunks and keeps what exists.
func (e *emitter) copyStack(l layout) {
	base := int16(l.stack)
	for i, r := range stackRegs {
		e.emit(
			asm.LoadMem(asm.R1, regCtx, ptRegsOffset[r], asm.DWord),
			asm.StoreMem(regEvent, base+int16(8*i), asm.R1, asm.DWord),
		)
	}
	copyAt := func(off, size int) {
		e.emit(
			asm.Mov.Reg(asm.R1, regEvent),
			asm.Add.Imm(asm.R1, int32(l.stack+stackDataOff+off)),
			asm.Mov.Imm(asm.R2, int32(size)),
			asm.LoadMem(asm.R3, regCtx, ptRegsOffset[symbols.RegRSP], asm.DWord),
		)
		if off != 0 {
			e.emit(asm.Add.Imm(asm.R3, int32(off)))
		}
		e.emit(asm.FnProbeReadUser.Call())
	}
	done := e.label("stack_done")
	chunks := e.label("stack_chunks")
	copyAt(0, l.stackBytes)
	e.emit(
		asm.JNE.Imm(asm.R0, 0, chunks),
		asm.StoreImm(regEvent, base+stackLenOff, int64(l.stackBytes), asm.Word),
		asm.Ja.Label(done),
	)
	e.mark(chunks)
	n := l.stackBytes / stackChunk
	short := make([]string, n)
	for k := range n {
		short[k] = e.label("stack_short")
		copyAt(k*stackChunk, stackChunk)
		e.emit(asm.JNE.Imm(asm.R0, 0, short[k]))
	}
	e.emit(
		asm.StoreImm(regEvent, base+stackLenOff, int64(l.stackBytes), asm.Word),
		asm.Ja.Label(done),
	)
	for k := range n {
		e.mark(short[k])
		e.emit(asm.StoreImm(regEvent, base+stackLenOff, int64(k*stackChunk), asm.Word))
		if k < n-1 {
			e.emit(asm.Ja.Label(done))
		}
	}
	e.mark(done)
	e.emit(asm.Mov.Imm(asm.R0, 0))
}

// copyReturns records the return addresses pending uretprobes replaced
// in this thread's stack: task->utask->return_instances, newest first.
func (e *emitter) copyReturns(l layout, r returnOffsets) {
	count := int16(l.stack + returnsOff)
	e.emit(asm.StoreImm(regEvent, count, 0, asm.Word))
	if !r.ok {
		return
	}
	done := e.label("returns_done")
	// readKernel reads 8 bytes at src+off into dst, an offset in the event
	// when toEvent, else from the frame pointer; a failure ends the walk.
	readKernel := func(src asm.Register, off int32, dst int16, toEvent bool) {
		e.emit(asm.Mov.Reg(asm.R3, src))
		if off != 0 {
			e.emit(asm.Add.Imm(asm.R3, off))
		}
		if toEvent {
			e.emit(asm.Mov.Reg(asm.R1, regEvent), asm.Add.Imm(asm.R1, int32(dst)))
		} else {
			e.emit(asm.Mov.Reg(asm.R1, asm.RFP), asm.Add.Imm(asm.R1, int32(dst)))
		}
		e.emit(
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, done),
		)
	}
	e.emit(asm.FnGetCurrentTask.Call(), asm.Mov.Reg(regBase, asm.R0))
	readKernel(regBase, r.utask, -8, false)
	e.emit(asm.LoadMem(regBase, asm.RFP, -8, asm.DWord), asm.JEq.Imm(regBase, 0, done))
	readKernel(regBase, r.instances, -8, false)
	for i := range maxReturns {
		e.emit(asm.LoadMem(regBase, asm.RFP, -8, asm.DWord), asm.JEq.Imm(regBase, 0, done))
		pair := int16(l.stack + returnsOff + 8 + 16*i)
		readKernel(regBase, r.stack, pair, true)
		readKernel(regBase, r.orig, pair+8, true)
		e.emit(asm.StoreImm(regEvent, count, int64(i+1), asm.Word))
		readKernel(regBase, r.next, -8, false)
	}
	e.mark(done)
	e.emit(asm.Mov.Imm(asm.R0, 0))
}

// nullPage bounds the addresses treated as NULL pointers plus an offset.
const nullPage = 4096

// probeRead reads size bytes at regBase+off into the event at dst. A NULL
// base (r->upstream before there is one) is a fault decided here: a read
// that faults in the helper costs a page fault, several microseconds in a
// VM, on every hit.
func (e *emitter) probeRead(dst int16, size int, off int64, fault string) {
	e.readTo(regEvent, dst, size, off, fault)
}

func indexOf(keys []rootKey, k rootKey) int {
	for i, x := range keys {
		if x == k {
			return i
		}
	}
	return -1
}
