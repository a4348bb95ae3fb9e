package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// Watch reports flips of a field, caught at the instructions that write
// it: a uprobe on each write site computes the field's new value from the
// instruction's operands before the store runs, and reports only a real
// change of a real object. Sites on hot paths that never touch the field
// cost a trap and a few reads; nothing is written unless the field flips.
type Watch struct {
	// The field inside the object: byte offset, bit offset and width.
	FieldOffset int64
	BitOffset   int
	BitSize     int
	// Check decides that the written object is one of the watched kind.
	Check ObjectCheck
	Sites []WatchSite
	// Bias is added to global addresses (the load address of a PIE).
	Bias uint64
}

// ObjectCheck tells a watched object from memory that merely has the
// field's layout, by round trips of pointers. OwnerLoads lead from the
// object to its owner (the connection), the root of the reported values
// (RegObject). From the owner, OwnerToObject must lead back to the object,
// and each of OwnerLoops back to the owner. One round trip is not enough:
// a doubly linked list node (prev at 0, next at 8) passes ev->data->read.
type ObjectCheck struct {
	OwnerLoads    []int64
	OwnerToObject []int64
	OwnerLoops    [][]int64
}

// WatchSite is one instruction that may write the field.
type WatchSite struct {
	FileOffset uint64 // where the uprobe goes
	Len        int    // the instruction's length
	// The object is BaseReg + IndexReg*Scale - BaseAt, or GlobalAddr+Bias.
	BaseReg, IndexReg int // DWARF numbers, -1 when absent
	Scale             uint8
	BaseAt            int64
	Global            bool
	GlobalAddr        uint64
	// Modelled: the new value is ((old & Keep) | Set) ^ Flip, combined
	// with (SrcReg >> SrcShift) & Take by SrcOp. Sites that are not
	// modelled read the field before and after the instruction instead.
	Modelled              bool
	Keep, Set, Flip, Take uint64
	SrcReg                int // -1 when none
	SrcShift              int // right shift; negative: left
	SrcOp                 SrcOp
}

// SrcOp combines the source register's bits with the new value.
type SrcOp uint8

const (
	SrcOr  SrcOp = iota // store or or: new |= src
	SrcAnd              // and: new &= src | ^Take
	SrcXor              // xor: new ^= src
)

// WatchAttach is how a watch's programs reach its write sites, chosen by
// feature probes, best first.
type WatchAttach int

const (
	// WatchAuto chooses the best the kernel has (ChooseWatchAttach).
	WatchAuto WatchAttach = iota
	// WatchMulti: one program per site shape, attached to all its sites
	// with one uprobe_multi link, the site's index as the cookie (Linux
	// 6.6).
	WatchMulti WatchAttach = iota
	// WatchCookie: the same programs, attached with a uprobe per site and
	// the site's index as the link's BPF cookie (Linux 5.15).
	WatchCookie
	// WatchPerSite: a program per site with the site's index in its code
	// (any kernel): many more programs to load.
	WatchPerSite
)

// WatchAttachNames are the names ParseWatchAttach takes, by mode.
var WatchAttachNames = map[WatchAttach]string{WatchAuto: "auto", WatchMulti: "multi", WatchCookie: "cookie", WatchPerSite: "per-site"}

func (a WatchAttach) String() string {
	switch a {
	case WatchAuto:
		return "the best the kernel has"
	case WatchMulti:
		return "one uprobe_multi link per site shape"
	case WatchCookie:
		return "a uprobe per site, the site in its BPF cookie"
	}
	return "a uprobe and a program per site"
}

// ChooseWatchAttach probes the kernel for the best way to attach a
// watch.
func ChooseWatchAttach() WatchAttach {
	if features.HaveBPFLinkUprobeMulti() == nil {
		return WatchMulti
	}
	if features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetAttachCookie) == nil && features.HaveProgramType(ebpf.Kprobe) == nil {
		// The helper came with perf-event links' cookies (5.15).
		return WatchCookie
	}
	return WatchPerSite
}

// Site parameters, per cookie, in an array map.
const (
	paramBaseAt = 0
	paramKeep   = 8
	paramSet    = 16
	paramFlip   = 24
	paramTake   = 32
	paramShift  = 40
	paramGlobal = 48
	paramSize   = 56
)

// pendingValueSize: the object and the field's value before an
// instruction that is not modelled, per thread.
const pendingValueSize = 16

// watchShape groups sites one program can serve: the registers differ
// between shapes, everything else comes from the parameter map.
type watchShape struct {
	base, index int
	scale       uint8
	src         int
	srcOp       SrcOp
	global      bool
	modelled    bool
	post        bool // the second half of an unmodelled site, after the store
}

func (w *Watch) shapes() (map[watchShape][]int, []watchShape) {
	groups := map[watchShape][]int{}
	var order []watchShape
	add := func(sh watchShape, i int) {
		if _, ok := groups[sh]; !ok {
			order = append(order, sh)
		}
		groups[sh] = append(groups[sh], i)
	}
	for i, s := range w.Sites {
		sh := watchShape{base: s.BaseReg, index: s.IndexReg, scale: s.Scale, global: s.Global, modelled: s.Modelled, src: -1}
		if s.Global {
			sh.base, sh.index, sh.scale = -1, -1, 0
		}
		if s.Modelled {
			sh.src, sh.srcOp = s.SrcReg, s.SrcOp
		}
		add(sh, i)
		if !s.Modelled {
			add(watchShape{post: true, base: -1, index: -1, src: -1}, i)
		}
	}
	return groups, order
}

func (w *Watch) params() []byte {
	out := make([]byte, paramSize*len(w.Sites))
	for i, s := range w.Sites {
		b := out[i*paramSize:]
		le := binary.LittleEndian
		le.PutUint64(b[paramBaseAt:], uint64(s.BaseAt))
		le.PutUint64(b[paramKeep:], s.Keep)
		le.PutUint64(b[paramSet:], s.Set)
		le.PutUint64(b[paramFlip:], s.Flip)
		le.PutUint64(b[paramTake:], s.Take)
		le.PutUint64(b[paramShift:], uint64(int64(s.SrcShift)))
		le.PutUint64(b[paramGlobal:], s.GlobalAddr+w.Bias)
	}
	return out
}

// loadReg loads a pt_regs register by DWARF number.
func (e *emitter) loadReg(dst asm.Register, reg int) error {
	off, ok := ptRegsOffset[reg]
	if !ok {
		return fmt.Errorf("register %d has no pt_regs slot", reg)
	}
	e.emit(asm.LoadMem(dst, regCtx, off, asm.DWord))
	return nil
}

// fieldBytes is how many bytes hold the field.
func (w *Watch) fieldBytes() int { return (w.BitOffset + w.BitSize + 7) / 8 }

// readField reads the field of the object in regBase into r1, right-aligned.
func (e *emitter) readField(w *Watch, fail string) {
	e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slotLeft, asm.R1, asm.DWord))
	e.readTo(asm.RFP, slotLeft, w.fieldBytes(), w.FieldOffset, fail)
	e.emit(asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord))
	if left := 64 - w.BitOffset - w.BitSize; left > 0 {
		e.emit(asm.LSh.Imm(asm.R1, int32(left)))
	}
	if right := 64 - w.BitSize; right > 0 {
		e.emit(asm.RSh.Imm(asm.R1, int32(right)))
	}
}

func pseudo(reg int) int16 {
	s, _ := pseudoSlot(reg)
	return s
}

// watchPrologue computes the site, the object, and the field before and
// after; it exits unless the field flips on a watched object. site is the
// site's index when it is baked into the program (WatchPerSite), -1 when
// the link's cookie carries it.
func (e *emitter) watchPrologue(w *Watch, sh watchShape, m mapFDs, site int) error {
	// The cookie indexes the site's parameters.
	if site >= 0 {
		e.emit(asm.Mov.Imm(asm.R0, int32(site)))
	} else {
		e.emit(
			asm.Mov.Reg(asm.R1, regCtx),
			asm.FnGetAttachCookie.Call(),
		)
	}
	e.emit(
		asm.StoreMem(asm.RFP, pseudo(RegSite), asm.R0, asm.DWord),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.watchParams),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(regSaved, asm.R0),
	)
	// Per-site hits show which sites cost traps without a flip.
	e.emit(
		asm.LoadMapPtr(asm.R1, m.watchHits),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
	)
	counted := e.label("site_counted")
	e.emit(
		asm.JEq.Imm(asm.R0, 0, counted),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	e.mark(counted)
	e.emit(asm.Mov.Imm(asm.R0, 0))
	if sh.post {
		return e.watchPost(w, m)
	}
	// The object.
	if sh.global {
		e.emit(asm.LoadMem(regBase, regSaved, paramGlobal, asm.DWord))
	} else {
		if err := e.loadReg(regBase, sh.base); err != nil {
			return err
		}
		if sh.index >= 0 {
			if err := e.loadReg(asm.R1, sh.index); err != nil {
				return err
			}
			if sh.scale > 1 {
				e.emit(asm.LSh.Imm(asm.R1, int32(bits.TrailingZeros8(sh.scale))))
			}
			e.emit(asm.Add.Reg(regBase, asm.R1))
		}
		e.emit(asm.LoadMem(asm.R1, regSaved, paramBaseAt, asm.DWord), asm.Sub.Reg(regBase, asm.R1))
	}
	e.emit(asm.StoreMem(asm.RFP, pseudo(RegObject), regBase, asm.DWord))
	e.readField(w, "exit")
	e.emit(asm.StoreMem(asm.RFP, pseudo(RegOld), asm.R1, asm.DWord))
	if !sh.modelled {
		// Remember the object and the old value; the probe after the
		// instruction compares.
		e.emit(
			asm.StoreMem(asm.RFP, slotAggInit, regBase, asm.DWord),
			asm.StoreMem(asm.RFP, slotAggInit+8, asm.R1, asm.DWord),
			asm.FnGetCurrentPidTgid.Call(),
			asm.StoreMem(asm.RFP, slotRight, asm.R0, asm.DWord),
			asm.LoadMapPtr(asm.R1, m.watchPending),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, slotRight),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, slotAggInit),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Ja.Label("exit"),
		)
		return nil
	}
	// new = ((old & Keep) | Set) ^ Flip, then the source register's bits.
	e.emit(
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.LoadMem(asm.R3, regSaved, paramKeep, asm.DWord),
		asm.And.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, regSaved, paramSet, asm.DWord),
		asm.Or.Reg(asm.R2, asm.R3),
		asm.LoadMem(asm.R3, regSaved, paramFlip, asm.DWord),
		asm.Xor.Reg(asm.R2, asm.R3),
	)
	if sh.src >= 0 {
		if err := e.loadReg(asm.R3, sh.src); err != nil {
			return err
		}
		left := e.label("shift_left")
		shifted := e.label("shifted")
		e.emit(
			asm.LoadMem(asm.R4, regSaved, paramShift, asm.DWord),
			asm.JSLT.Imm(asm.R4, 0, left),
			asm.RSh.Reg(asm.R3, asm.R4),
			asm.Ja.Label(shifted),
		)
		e.mark(left)
		e.emit(asm.Neg.Imm(asm.R4, 0), asm.LSh.Reg(asm.R3, asm.R4))
		e.mark(shifted)
		e.emit(asm.LoadMem(asm.R4, regSaved, paramTake, asm.DWord), asm.And.Reg(asm.R3, asm.R4))
		switch sh.srcOp {
		case SrcOr:
			e.emit(asm.Or.Reg(asm.R2, asm.R3))
		case SrcAnd:
			e.emit(asm.Xor.Imm(asm.R4, -1), asm.Or.Reg(asm.R3, asm.R4), asm.And.Reg(asm.R2, asm.R3))
		case SrcXor:
			e.emit(asm.Xor.Reg(asm.R2, asm.R3))
		}
	}
	e.maskField(w, asm.R2)
	e.emit(
		asm.StoreMem(asm.RFP, pseudo(RegNew), asm.R2, asm.DWord),
		asm.JEq.Reg(asm.R2, asm.R1, "exit"),
	)
	return e.checkObject(w)
}

func (e *emitter) maskField(w *Watch, r asm.Register) {
	if w.BitSize >= 64 {
		return
	}
	if w.BitSize < 31 {
		e.emit(asm.And.Imm(r, int32(1<<w.BitSize-1)))
		return
	}
	e.emit(asm.LSh.Imm(r, int32(64-w.BitSize)), asm.RSh.Imm(r, int32(64-w.BitSize)))
}

// watchPost runs after an instruction that is not modelled: it compares
// the field with the value saved before it.
func (e *emitter) watchPost(w *Watch, m mapFDs) error {
	e.emit(
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, slotRight, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.watchPending),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotRight),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.LoadMem(regBase, asm.R0, 0, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.StoreMem(asm.RFP, pseudo(RegObject), regBase, asm.DWord),
		asm.StoreMem(asm.RFP, pseudo(RegOld), asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.watchPending),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotRight),
		asm.FnMapDeleteElem.Call(),
		asm.LoadMem(regBase, asm.RFP, pseudo(RegObject), asm.DWord),
	)
	e.readField(w, "exit")
	e.emit(
		asm.StoreMem(asm.RFP, pseudo(RegNew), asm.R1, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, pseudo(RegOld), asm.DWord),
		asm.JEq.Reg(asm.R2, asm.R1, "exit"),
	)
	return e.checkObject(w)
}

// checkObject follows the pointer round trips from the object's owner,
// exiting unless each comes back; RegObject becomes the owner.
func (e *emitter) checkObject(w *Watch) error {
	follow := func(from int16, path []int64) {
		e.emit(asm.LoadMem(regBase, asm.RFP, from, asm.DWord))
		for _, off := range path {
			e.readTo(asm.RFP, slotRight, 8, off, "exit")
			e.emit(asm.LoadMem(regBase, asm.RFP, slotRight, asm.DWord))
		}
	}
	follow(pseudo(RegObject), w.Check.OwnerLoads)
	e.emit(asm.StoreMem(asm.RFP, slotLeft, regBase, asm.DWord)) // the owner
	if len(w.Check.OwnerToObject) > 0 {
		follow(slotLeft, w.Check.OwnerToObject)
		e.emit(
			asm.LoadMem(asm.R1, asm.RFP, pseudo(RegObject), asm.DWord),
			asm.JNE.Reg(regBase, asm.R1, "exit"),
		)
	}
	for _, loop := range w.Check.OwnerLoops {
		follow(slotLeft, loop)
		e.emit(
			asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord),
			asm.JNE.Reg(regBase, asm.R1, "exit"),
		)
	}
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, slotLeft, asm.DWord),
		asm.StoreMem(asm.RFP, pseudo(RegObject), asm.R1, asm.DWord),
	)
	return nil
}

// attachWatch loads the watch's programs and attaches them to its sites:
// one program per site shape with a uprobe_multi link, or with a uprobe
// per site, or one program per site, as the kernel allows (WatchAttach).
func (s *Session) attachWatch(ex *link.Executable, id int, pr *Probe, base program, m mapFDs) error {
	w := pr.Watch
	how := s.WatchAttach
	if how == WatchAuto {
		how = ChooseWatchAttach()
		s.WatchAttach = how
	}
	groups, order := w.shapes()
	sort.SliceStable(order, func(i, j int) bool { return len(groups[order[i]]) > len(groups[order[j]]) })
	load := func(sh watchShape, site int) (*ebpf.Program, error) {
		p := base
		p.prologue = func(e *emitter) error { return e.watchPrologue(w, sh, m, site) }
		if !sh.modelled && !sh.post {
			p.emit = false
		}
		insns, err := generate(p, m)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		spec := &ebpf.ProgramSpec{Name: fmt.Sprintf("ngxp_watch_%d", id), Type: ebpf.Kprobe, Instructions: insns, License: "GPL"}
		if how == WatchMulti {
			spec.AttachType = ebpf.AttachTraceUprobeMulti
		}
		prog, err := ebpf.NewProgram(spec)
		if err != nil {
			return nil, fmt.Errorf("load watch program: %w", err)
		}
		s.progs = append(s.progs, prog)
		return prog, nil
	}
	// at is where a site's probe goes: on the store, or after it for the
	// second half of a site that is read before and after.
	at := func(sh watchShape, i int) uint64 {
		site := w.Sites[i]
		if sh.post {
			return site.FileOffset + uint64(site.Len)
		}
		return site.FileOffset
	}
	uprobe := func(prog *ebpf.Program, addr, cookie uint64) error {
		l, err := ex.Uprobe("ngxp_watch", prog, &link.UprobeOptions{Address: addr, Cookie: cookie})
		if err != nil {
			return fmt.Errorf("attach watch program at file offset %#x: %w", addr, err)
		}
		s.links = append(s.links, l)
		return nil
	}
	for _, sh := range order {
		switch how {
		case WatchMulti:
			prog, err := load(sh, -1)
			if err != nil {
				return err
			}
			var addrs, cookies []uint64
			for _, i := range groups[sh] {
				addrs = append(addrs, at(sh, i))
				cookies = append(cookies, uint64(i))
			}
			l, err := ex.UprobeMulti(nil, prog, &link.UprobeMultiOptions{Addresses: addrs, Cookies: cookies})
			if err != nil {
				return fmt.Errorf("attach watch program to %d write sites: %w", len(addrs), err)
			}
			s.links = append(s.links, l)
		case WatchCookie:
			prog, err := load(sh, -1)
			if err != nil {
				return err
			}
			for _, i := range groups[sh] {
				if err := uprobe(prog, at(sh, i), uint64(i)); err != nil {
					return err
				}
			}
		default:
			for _, i := range groups[sh] {
				prog, err := load(sh, i)
				if err != nil {
					return err
				}
				if err := uprobe(prog, at(sh, i), 0); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// createWatchMaps makes the site parameters and the per-thread pending
// values of a watch.
func (s *Session) createWatchMaps(w *Watch, m *mapFDs) error {
	if len(w.Sites) == 0 {
		return errors.New("watch: no write sites to probe")
	}
	params, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ngxp_wparams", Type: ebpf.Array, KeySize: 4, ValueSize: paramSize, MaxEntries: uint32(len(w.Sites))})
	if err != nil {
		return fmt.Errorf("create watch parameters: %w", err)
	}
	s.owned = append(s.owned, params)
	raw := w.params()
	for i := range w.Sites {
		if err := params.Update(uint32(i), raw[i*paramSize:(i+1)*paramSize], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("fill watch parameters: %w", err)
		}
	}
	pending, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ngxp_wpending", Type: ebpf.LRUHash, KeySize: 8, ValueSize: pendingValueSize, MaxEntries: 4096})
	if err != nil {
		return fmt.Errorf("create watch pending map: %w", err)
	}
	s.owned = append(s.owned, pending)
	hits, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ngxp_whits", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(len(w.Sites))})
	if err != nil {
		return fmt.Errorf("create watch hit counters: %w", err)
	}
	s.owned = append(s.owned, hits)
	s.watchHits = hits
	m.watchParams, m.watchPending, m.watchHits = params.FD(), pending.FD(), hits.FD()
	return nil
}

// WatchHits returns the hits of each write site of the session's watch,
// by site index (a site probed before and after counts both).
func (s *Session) WatchHits() []uint64 {
	if s.watchHits == nil {
		return nil
	}
	out := make([]uint64, s.watchHits.MaxEntries())
	for i := range out {
		out[i] = sumPerCPU(s.watchHits, uint32(i))
	}
	return out
}
