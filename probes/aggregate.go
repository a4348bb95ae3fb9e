package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// Aggregation is a map the kernel fills, like bpftrace's @name[keys]:
// per key, the count of hits and the sum, minimum and maximum of a value.
// Nothing crosses the ring buffer, so counting costs no event.
type Aggregation struct {
	Name string
	Func string // count, sum, min, max or avg: what to print

	// keys is the key layout, the same for every session of the probes;
	// each session has its own map (Session.aggMaps), so that compiled
	// probes can be attached again after a session closed.
	keys layout
}

// AggregateUpdate adds a hit of a probe to an aggregation.
type AggregateUpdate struct {
	Aggregation *Aggregation
	Keys        []*symbols.Plan
	Value       *Operand // nil for count
}

// The per-key value: count, sum, min, max (per CPU; summed when read).
const aggValueSize = 32

// maxAggregateKeys bounds the entries of one aggregation.
const maxAggregateKeys = 16384

// AggregateRow is one key of an aggregation, read at exit.
type AggregateRow struct {
	Keys          []Value
	Count         uint64
	Sum, Min, Max int64
	raw           []byte
}

// keyLayout places key values from offset 0; a map needs a non-empty key.
func keyLayout(keys []*symbols.Plan) layout {
	l := newLayout(keys)
	for i := range l.slots {
		l.slots[i].offset -= headerSize
	}
	l.size -= headerSize
	if l.size == 0 {
		l.size = 8
	}
	return l
}

// sameShape reports whether two key layouts are laid out alike.
func sameShape(a, b layout) bool {
	if a.size != b.size || len(a.slots) != len(b.slots) {
		return false
	}
	for i := range a.slots {
		if a.slots[i].offset != b.slots[i].offset || a.slots[i].data != b.slots[i].data {
			return false
		}
	}
	return true
}

// ErrAggregateShape: one aggregation is updated with keys of different shapes.
var ErrAggregateShape = errors.New("aggregation keys differ between probes")

// createAggregations makes a map per aggregation and the scratch buffer
// keys are built in.
func (s *Session) createAggregations(probes []*Probe) (scratch *ebpf.Map, err error) {
	maxKey := 8
	for _, p := range probes {
		for _, u := range p.Aggregates {
			a := u.Aggregation
			l := keyLayout(u.Keys)
			if l.size > maxEventSize {
				return nil, fmt.Errorf("@%s: a key of %d bytes is too large", a.Name, l.size)
			}
			if s.aggMaps[a] == nil {
				a.keys = l
				m, err := ebpf.NewMap(&ebpf.MapSpec{
					Name: "ngxp_agg", Type: ebpf.PerCPUHash,
					KeySize: uint32(l.size), ValueSize: aggValueSize, MaxEntries: maxAggregateKeys,
				})
				if err != nil {
					return nil, fmt.Errorf("create map for @%s: %w", a.Name, err)
				}
				if s.aggMaps == nil {
					s.aggMaps = map[*Aggregation]*ebpf.Map{}
				}
				s.aggMaps[a] = m
				s.owned = append(s.owned, m)
				s.aggregations = append(s.aggregations, a)
			} else if !sameShape(a.keys, l) {
				return nil, fmt.Errorf("%w: @%s in %s", ErrAggregateShape, a.Name, p.Name)
			}
			maxKey = max(maxKey, l.size)
		}
	}
	if len(s.aggregations) == 0 {
		return nil, nil
	}
	scratch, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ngxp_scratch", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: uint32(maxKey), MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create scratch map: %w", err)
	}
	s.owned = append(s.owned, scratch)
	return scratch, nil
}

// aggregate emits one update: build the key in the scratch map, evaluate
// the value, then add to this CPU's entry or create it.
func (e *emitter) aggregate(p program, m mapFDs, u AggregateUpdate) error {
	a := u.Aggregation
	skip := e.label("agg_skip")
	e.emit(
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.scratch),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.Mov.Reg(regEvent, asm.R0),
		asm.Mov.Imm(asm.R1, 0),
	)
	for off := 0; off < a.keys.size; off += 8 {
		e.emit(asm.StoreMem(regEvent, int16(off), asm.R1, asm.DWord))
	}
	saved := e.prefixes
	e.prefixes = nil
	for _, s := range keyLayout(u.Keys).slots {
		if err := e.value(p, s); err != nil {
			return err
		}
	}
	e.prefixes = saved
	// An unreadable value skips the update: it has nothing to add.
	if u.Value != nil {
		if err := e.operand(p, *u.Value, slotAggValue, skip); err != nil {
			return err
		}
	} else {
		e.emit(asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.RFP, slotAggValue, asm.R1, asm.DWord))
	}
	fd := m.aggregations[a]
	create := e.label("agg_create")
	e.emit(
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, regEvent),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, create),
		asm.LoadMem(asm.R2, asm.RFP, slotAggValue, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, 8, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R2),
		asm.StoreMem(asm.R0, 8, asm.R1, asm.DWord),
	)
	notLess, notMore := e.label("agg_min"), e.label("agg_max")
	e.emit(
		asm.LoadMem(asm.R1, asm.R0, 16, asm.DWord),
		asm.JSGE.Reg(asm.R2, asm.R1, notLess),
		asm.StoreMem(asm.R0, 16, asm.R2, asm.DWord),
	)
	e.mark(notLess)
	e.emit(
		asm.LoadMem(asm.R1, asm.R0, 24, asm.DWord),
		asm.JSLE.Reg(asm.R2, asm.R1, notMore),
		asm.StoreMem(asm.R0, 24, asm.R2, asm.DWord),
	)
	e.mark(notMore)
	e.emit(asm.Ja.Label(skip))
	e.mark(create)
	e.emit(
		asm.LoadMem(asm.R2, asm.RFP, slotAggValue, asm.DWord),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.RFP, slotAggInit, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, slotAggInit+8, asm.R2, asm.DWord),
		asm.StoreMem(asm.RFP, slotAggInit+16, asm.R2, asm.DWord),
		asm.StoreMem(asm.RFP, slotAggInit+24, asm.R2, asm.DWord),
		asm.LoadMapPtr(asm.R1, fd),
		asm.Mov.Reg(asm.R2, regEvent),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotAggInit),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY: per-CPU, no other writer
		asm.FnMapUpdateElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
	)
	// The map is full: count the hit as lost, so the summary says so.
	e.count(m.lost, p.probeID)
	e.mark(skip)
	e.emit(asm.Mov.Imm(asm.R0, 0))
	return nil
}

// Aggregates reads every aggregation: per key, CPUs summed.
func (s *Session) Aggregates() map[*Aggregation][]AggregateRow {
	out := map[*Aggregation][]AggregateRow{}
	for _, a := range s.aggregations {
		var rows []AggregateRow
		key := make([]byte, a.keys.size)
		var perCPU [][]byte
		it := s.aggMaps[a].Iterate()
		for it.Next(&key, &perCPU) {
			row := AggregateRow{Min: math.MaxInt64, Max: math.MinInt64, raw: append([]byte(nil), key...)}
			for _, v := range perCPU {
				if len(v) < aggValueSize {
					continue
				}
				n := binary.LittleEndian.Uint64(v)
				if n == 0 {
					continue
				}
				row.Count += n
				row.Sum += int64(binary.LittleEndian.Uint64(v[8:]))
				row.Min = min(row.Min, int64(binary.LittleEndian.Uint64(v[16:])))
				row.Max = max(row.Max, int64(binary.LittleEndian.Uint64(v[24:])))
			}
			// The key is a record without a header: decode it as one.
			rec := append(make([]byte, headerSize), key...)
			shifted := a.keys
			shifted.slots = append([]valueSlot(nil), a.keys.slots...)
			for i := range shifted.slots {
				shifted.slots[i].offset += headerSize
			}
			shifted.size += headerSize
			if vals, err := shifted.decode(rec); err == nil {
				row.Keys = vals
			}
			rows = append(rows, row)
		}
		out[a] = rows
	}
	return out
}
