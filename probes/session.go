package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Probe is one attach point: a function instance at entry or return, and
// the values to read there.
type Probe struct {
	Name     string // as the user wrote it, e.g. ngx_unix_recv or ngx_unix_recv%return
	Function *symbols.Function
	Return   bool
	Values   []*symbols.Plan
	// Stack captures registers and the user stack for unwinding.
	Stack bool
	// At is the probe's offset from the function's entry (FUNCTION+OFF
	// and FILE:LINE probes); return probes are at 0.
	At uint64
	// Filter, when set, decides in the kernel which hits count further.
	Filter Cond
	// Aggregates are updated on every hit that passes the filter.
	Aggregates []AggregateUpdate
	// NoEvent: the probe only aggregates; it writes no event.
	NoEvent bool
	// Watch, when set, makes this probe a field watch: it attaches to the
	// watch's write sites, not to Function; its values may use the pseudo
	// registers (RegObject, RegSite, RegOld, RegNew).
	Watch *Watch
	// Diff, when set, reports changes of a field between probe points.
	Diff *Diff
}

// Options configure Attach.
type Options struct {
	// PID restricts events to one process; with Children, to its children
	// too (an nginx master and its workers, across reloads). 0: every
	// process running the binary.
	PID      int
	Children bool
	// RingBufferBytes is the event buffer size, a power of two pages.
	RingBufferBytes int
	// StackBytes is how much stack a probe with Stack copies; 8 KiB when 0.
	StackBytes int
}

// DefaultStackBytes is the stack copy of a probe with Stack.
const DefaultStackBytes = 8 << 10

// Session is a set of attached probes and the reader of their events.
type Session struct {
	probes  []*Probe
	layouts []layout
	links   []link.Link
	progs   []*ebpf.Program
	maps    []*ebpf.Map
	hits    *ebpf.Map
	lost    *ebpf.Map
	reader  *ringbuf.Reader
	record  ringbuf.Record // reused by Read

	aggregations []*Aggregation
	watchHits    *ebpf.Map

	// AttachTime is how long loading and attaching took.
	AttachTime time.Duration
}

// Event is one probe hit.
type Event struct {
	Probe  *Probe
	PID    uint32
	TID    uint32
	TimeNS uint64 // CLOCK_MONOTONIC
	Values []Value
	// Stack is set for probes with Stack: registers and stack bytes to
	// unwind with package stacks.
	Stack *stacks.Capture
}

// ErrClosed is returned by Read after Close.
var ErrClosed = errors.New("session closed")

// Attach loads a program per probe and attaches it to the binary at path
// (which may be /proc/PID/exe). On any error, nothing stays attached.
func Attach(path string, probes []*Probe, opts Options) (_ *Session, err error) {
	start := time.Now()
	if err := CheckSupport(); err != nil {
		return nil, err
	}
	if len(probes) == 0 {
		return nil, errors.New("no probes to attach")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising the memlock limit: %w", err)
	}
	s := &Session{probes: probes}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	filter := processFilter{}
	if opts.PID != 0 {
		filter.tgid = uint32(opts.PID)
		if opts.Children {
			filter.includeChildren = true
			if filter.realParentOff, filter.tgidOff, err = taskOffsets(); err != nil {
				return nil, err
			}
		}
	}
	if err := s.createMaps(len(probes), opts.RingBufferBytes); err != nil {
		return nil, err
	}
	m := maps{events: s.maps[0].FD(), hits: s.hits.FD(), lost: s.lost.FD(), saved: s.maps[3].FD()}
	scratch, err := s.createAggregations(probes)
	if err != nil {
		return nil, err
	}
	if scratch != nil {
		m.scratch = scratch.FD()
		m.aggregations = map[*Aggregation]int{}
		for _, a := range s.aggregations {
			m.aggregations[a] = a.m.FD()
		}
	}

	stackBytes := opts.StackBytes
	if stackBytes == 0 {
		stackBytes = DefaultStackBytes
	}
	programs := plan(probes, filter, s.maps[0].MaxEntries()/8, stackBytes)
	var returns returnOffsets
	for _, p := range probes {
		if p.Stack {
			returns = uretprobeOffsets()
			break
		}
	}
	for i := range programs {
		programs[i].returns = returns
	}
	s.layouts = make([]layout, len(probes))
	for _, p := range programs {
		if p.emit {
			s.layouts[p.probeID] = p.layout
		}
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, fmt.Errorf("open %s for uprobes: %w", path, err)
	}
	for _, pr := range probes {
		if pr.Watch != nil {
			if err := s.createWatchMaps(pr.Watch, &m); err != nil {
				return nil, err
			}
		}
		if pr.Diff != nil && m.diffSeen == 0 {
			if err := s.createDiffMap(&m); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range programs {
		if int(p.probeID) < len(probes) && probes[p.probeID].Watch != nil {
			pr := probes[p.probeID]
			if err := s.attachWatch(ex, int(p.probeID), pr, p.program, m); err != nil {
				return nil, err
			}
			continue
		}
		if int(p.probeID) < len(probes) && probes[p.probeID].Diff != nil {
			d := probes[p.probeID].Diff
			p.prologue = func(e *emitter) error { return e.diffPrologue(d, p.program, m) }
		}
		prog, err := load(p, m)
		if err != nil {
			return nil, err
		}
		s.progs = append(s.progs, prog)
		fn := p.function
		uopts := &link.UprobeOptions{Address: fn.Offset + p.at}
		var l link.Link
		if p.ret {
			l, err = ex.Uretprobe(fn.Symbol, prog, uopts)
		} else {
			l, err = ex.Uprobe(fn.Symbol, prog, uopts)
		}
		if err != nil {
			return nil, fmt.Errorf("attach %s to %s+%#x at file offset %#x: %w", kind(p.ret), fn.Symbol, p.at, fn.Offset+p.at, err)
		}
		s.links = append(s.links, l)
	}
	if s.reader, err = ringbuf.NewReader(s.maps[0]); err != nil {
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	s.AttachTime = time.Since(start)
	return s, nil
}

func kind(ret bool) string {
	if ret {
		return "uretprobe"
	}
	return "uprobe"
}

func (s *Session) createMaps(nprobes, ringBytes int) error {
	if ringBytes == 0 {
		ringBytes = 4 << 20
	}
	page := os.Getpagesize()
	if ringBytes < page || ringBytes&(ringBytes-1) != 0 {
		return fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", ringBytes, page)
	}
	specs := []*ebpf.MapSpec{
		{Name: "ngxp_events", Type: ebpf.RingBuf, MaxEntries: uint32(ringBytes)},
		// Twice the probes: argument-saving programs count past the probes.
		{Name: "ngxp_hits", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * nprobes)},
		{Name: "ngxp_lost", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * nprobes)},
		{Name: "ngxp_saved", Type: ebpf.LRUHash, KeySize: savedKeySize, ValueSize: 8 * maxSavedRoots, MaxEntries: 16384},
	}
	for _, spec := range specs {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		s.maps = append(s.maps, m)
	}
	s.hits, s.lost = s.maps[1], s.maps[2]
	return nil
}

// planned is a program with the function it attaches to.
type planned struct {
	program
	function *symbols.Function
	at       uint64
}

// plan turns probes into programs: one per probe, plus an entry program
// that saves arguments for each return probe whose function has no entry
// probe of its own.
func plan(probes []*Probe, filter processFilter, wakeupBytes uint32, stackBytes int) []planned {
	// Per function (by entry address): its id in the saved-roots key, and
	// the roots its return probes need saved at entry.
	ids := map[uint64]uint64{}
	roots := map[uint64][]rootKey{}
	for _, p := range probes {
		addr := p.Function.Address
		if _, ok := ids[addr]; !ok {
			ids[addr] = uint64(len(ids) + 1)
		}
		if !p.Return {
			continue
		}
		for _, v := range p.plans() {
			if v.Root.Const || v.Root.Return || v.Root.Reg >= RegObject {
				continue
			}
			r := rootKey{v.Root.Reg, v.Root.Add}
			if indexOf(roots[addr], r) < 0 {
				roots[addr] = append(roots[addr], r)
			}
		}
	}
	var out []planned
	saving := map[uint64]bool{} // functions whose entry program saves roots
	for id, p := range probes {
		addr := p.Function.Address
		l := newLayout(p.Values)
		if p.Stack {
			l = l.withStack(stackBytes)
		}
		pr := planned{function: p.Function, at: p.At, program: program{
			probeID: uint32(id), emit: !p.NoEvent, layout: l,
			ret: p.Return, functionID: ids[addr], filter: filter, wakeupBytes: int(wakeupBytes),
			where: p.Filter, aggregates: p.Aggregates,
		}}
		if p.Return {
			pr.savedRoots = roots[addr]
		} else if !saving[addr] {
			pr.saveRoots = roots[addr]
			saving[addr] = true
		}
		out = append(out, pr)
	}
	// Saving-only programs count their hits past the probes' slots.
	nextID := uint32(len(probes))
	for _, p := range probes {
		addr := p.Function.Address
		if saving[addr] || len(roots[addr]) == 0 {
			continue
		}
		saving[addr] = true
		out = append(out, planned{function: p.Function, program: program{
			probeID: nextID, functionID: ids[addr], saveRoots: roots[addr], filter: filter,
		}})
		nextID++
	}
	return out
}

// plans lists every plan the probe evaluates: values, filter operands
// and aggregation keys and values.
func (p *Probe) plans() []*symbols.Plan {
	out := append([]*symbols.Plan(nil), p.Values...)
	var walk func(c Cond)
	walk = func(c Cond) {
		switch c := c.(type) {
		case And:
			walk(c.L)
			walk(c.R)
		case Or:
			walk(c.L)
			walk(c.R)
		case Not:
			walk(c.X)
		case Compare:
			for _, o := range []Operand{c.L, c.R} {
				if o.Plan != nil {
					out = append(out, o.Plan)
				}
			}
		case StringEquals:
			out = append(out, c.Plan)
		}
	}
	walk(p.Filter)
	if p.Diff != nil {
		out = append(out, p.Diff.Key, p.Diff.Value)
	}
	for _, u := range p.Aggregates {
		out = append(out, u.Keys...)
		if u.Value != nil && u.Value.Plan != nil {
			out = append(out, u.Value.Plan)
		}
	}
	return out
}

// VerifierError explains a program the kernel rejected, naming the
// expression that caused it where a bisection can tell.
type VerifierError struct {
	Probe string
	Expr  string
	Log   []string
	Err   error
}

func (e *VerifierError) Error() string {
	where := "the probe itself"
	if e.Expr != "" {
		where = fmt.Sprintf("expression %q", e.Expr)
	}
	tail := e.Log
	if len(tail) > 8 {
		tail = tail[len(tail)-8:]
	}
	return fmt.Sprintf("the kernel verifier rejected the program for %s, caused by %s: %v\nverifier log (last lines):\n  %s",
		e.Probe, where, e.Err, strings.Join(tail, "\n  "))
}

func (e *VerifierError) Unwrap() error { return e.Err }

func load(p planned, m maps) (*ebpf.Program, error) {
	insns, err := generate(p.program, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.function.Symbol, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         fmt.Sprintf("ngxp_%d", p.probeID),
		Type:         ebpf.Kprobe,
		Instructions: insns,
		License:      "GPL",
	})
	if err == nil {
		return prog, nil
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return nil, fmt.Errorf("load program for %s: %w", p.function.Symbol, err)
	}
	out := &VerifierError{Probe: p.function.Symbol, Log: ve.Log, Err: err}
	// Bisect: if the probe loads without values, load each value alone to
	// name the culprit.
	frame := p.program
	frame.layout = newLayout(nil)
	frame.saveRoots = nil
	if !loads(frame, m) {
		return nil, out
	}
	for _, s := range p.layout.slots {
		single := p.program
		single.layout = newLayout([]*symbols.Plan{s.plan})
		single.saveRoots = nil
		if !loads(single, m) {
			out.Expr = s.plan.Expr
			break
		}
	}
	return nil, out
}

// loads reports whether the verifier accepts the program.
func loads(p program, m maps) bool {
	insns, err := generate(p, m)
	if err != nil {
		return false
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: insns, License: "GPL"})
	if err != nil {
		return false
	}
	prog.Close()
	return true
}

// Read blocks until the next event. It returns ErrClosed after Close.
// Programs wake the reader only when the ring fills up, so callers should
// set a deadline (SetDeadline) to bound how long events wait.
func (s *Session) Read() (Event, error) {
	for {
		raw, err := s.readSample()
		if err != nil {
			return Event{}, err
		}
		if ev, ok, err := s.Decode(raw); ok || err != nil {
			return ev, err
		}
	}
}

// ReadRecord is Read without decoding: it returns a copy of the next raw
// event for Decode. A record is several times smaller than its decoded
// event, so a reader that must queue events before they are printed
// queues records.
func (s *Session) ReadRecord() ([]byte, error) {
	raw, err := s.readSample()
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), raw...), nil
}

// MaxRecordSize is the largest record a probe of the session emits.
func (s *Session) MaxRecordSize() int {
	n := headerSize
	for _, l := range s.layouts {
		n = max(n, l.size)
	}
	return n
}

// readSample returns the next sample, valid until the next call.
func (s *Session) readSample() ([]byte, error) {
	if s.reader == nil {
		return nil, ErrClosed
	}
	err := s.reader.ReadInto(&s.record)
	if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, err // os.ErrDeadlineExceeded among others
	}
	return s.record.RawSample, nil
}

// Decode turns a record into an Event; ok is false for a record that no
// probe of the session emitted. Decode only reads the session's probes,
// so it may run in another goroutine than Read.
func (s *Session) Decode(raw []byte) (ev Event, ok bool, err error) {
	if len(raw) < headerSize {
		return Event{}, false, nil
	}
	id := binary.LittleEndian.Uint32(raw[hdrProbeID:])
	if int(id) >= len(s.probes) {
		return Event{}, false, nil
	}
	pidTgid := binary.LittleEndian.Uint64(raw[hdrPidTgid:])
	ev = Event{
		Probe:  s.probes[id],
		PID:    uint32(pidTgid >> 32),
		TID:    uint32(pidTgid),
		TimeNS: binary.LittleEndian.Uint64(raw[hdrTime:]),
	}
	if ev.Values, err = s.layouts[id].decode(raw); err != nil {
		return Event{}, false, err
	}
	ev.Stack = s.layouts[id].decodeStack(raw, int(ev.PID))
	return ev, true, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (s *Session) SetDeadline(t time.Time) {
	if s.reader != nil {
		s.reader.SetDeadline(t)
	}
}

// Counts is the per-probe hit and lost-event count.
type Counts struct {
	Probe *Probe
	Hits  uint64
	Lost  uint64
}

// Counts reads the kernel-side counters.
func (s *Session) Counts() []Counts {
	out := make([]Counts, len(s.probes))
	for i, p := range s.probes {
		out[i] = Counts{Probe: p, Hits: sumPerCPU(s.hits, uint32(i)), Lost: sumPerCPU(s.lost, uint32(i))}
	}
	return out
}

func sumPerCPU(m *ebpf.Map, key uint32) uint64 {
	var vals []uint64
	if err := m.Lookup(key, &vals); err != nil {
		return 0
	}
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n
}

// Detach removes every probe but keeps the ring buffer and counters, so
// that the events already written can be drained and counted exactly.
func (s *Session) Detach() error {
	var errs []error
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	for _, p := range s.progs {
		errs = append(errs, p.Close())
	}
	s.progs = nil
	return errors.Join(errs...)
}

// Close detaches every probe and frees every map. It is safe to call
// more than once.
func (s *Session) Close() error {
	errs := []error{s.Detach()}
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
		s.reader = nil
	}
	for _, m := range s.maps {
		errs = append(errs, m.Close())
	}
	s.maps = nil
	return errors.Join(errs...)
}
