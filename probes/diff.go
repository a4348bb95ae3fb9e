package probes

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Diff makes a probe report a field's changes between probe points: each
// point reads the field of the object Key names and compares it with the
// last value any point saw for that object, kept in a map. A change seen
// at a function's return, when its entry saw the old value, happened
// inside the function.
type Diff struct {
	Key   *symbols.Plan // the object's identity, a pointer value (c)
	Value *symbols.Plan // the field (c->read->eof)
	Point uint32        // this point's id: RegSite here, RegPrevPoint at the next
	// Evict: the object dies here (ngx_close_connection); compare, then
	// forget it, so that a reused address is not taken for a flip.
	Evict bool
}

// maxDiffObjects bounds the objects followed at once.
const maxDiffObjects = 65536

func (s *Session) createDiffMap(m *mapFDs) error {
	seen, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ngxp_dseen", Type: ebpf.LRUHash, KeySize: 8, ValueSize: 16, MaxEntries: maxDiffObjects})
	if err != nil {
		return fmt.Errorf("create diff map: %w", err)
	}
	s.owned = append(s.owned, seen)
	m.diffSeen = seen.FD()
	return nil
}

// diffPrologue reads the key and the field, updates the last-seen map,
// and goes on to the event only when the field changed.
func (e *emitter) diffPrologue(d *Diff, p program, m mapFDs) error {
	keySlot, valueSlot := pseudo(RegObject), pseudo(RegNew)
	if err := e.operand(p, Operand{Plan: d.Key}, keySlot, "exit"); err != nil {
		return err
	}
	if err := e.operand(p, Operand{Plan: d.Value}, valueSlot, "exit"); err != nil {
		return err
	}
	e.emit(
		asm.Mov.Imm(asm.R1, int32(d.Point)),
		asm.StoreMem(asm.RFP, pseudo(RegSite), asm.R1, asm.DWord),
		asm.LoadMapPtr(asm.R1, m.diffSeen),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(keySlot)),
		asm.FnMapLookupElem.Call(),
	)
	insert := e.label("diff_insert")
	e.emit(
		asm.JEq.Imm(asm.R0, 0, insert),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R0, 8, asm.DWord),
		asm.StoreMem(asm.RFP, pseudo(RegOld), asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, pseudo(RegPrevPoint), asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, valueSlot, asm.DWord),
		// Update in place: a map update per hit costs more than the probe.
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.Mov.Imm(asm.R3, int32(d.Point)),
		asm.StoreMem(asm.R0, 8, asm.R3, asm.DWord),
		asm.StoreMem(asm.RFP, slotAggValue, asm.R1, asm.DWord),
	)
	if d.Evict {
		e.emit(
			asm.LoadMapPtr(asm.R1, m.diffSeen),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(keySlot)),
			asm.FnMapDeleteElem.Call(),
		)
	}
	e.emit(
		asm.LoadMem(asm.R1, asm.RFP, slotAggValue, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, valueSlot, asm.DWord),
		asm.JEq.Reg(asm.R1, asm.R2, "exit"),
		asm.Ja.Label("diff_changed"),
	)
	e.mark(insert)
	if d.Evict {
		e.emit(asm.Ja.Label("exit")) // first and last sight: nothing to compare
	} else {
		e.emit(
			asm.LoadMem(asm.R3, asm.RFP, valueSlot, asm.DWord),
			asm.StoreMem(asm.RFP, slotAggInit, asm.R3, asm.DWord),
			asm.Mov.Imm(asm.R3, int32(d.Point)),
			asm.StoreMem(asm.RFP, slotAggInit+8, asm.R3, asm.DWord),
			asm.LoadMapPtr(asm.R1, m.diffSeen),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, int32(keySlot)),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, slotAggInit),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Ja.Label("exit"),
		)
	}
	e.mark("diff_changed")
	e.emit(asm.Mov.Imm(asm.R0, 0))
	return nil
}
