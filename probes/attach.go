package probes

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// Session is a set of attached probes and the reader of their events.
type Session struct {
	probes  []*Probe
	layouts []layout
	links   []link.Link
	progs   []*ebpf.Program
	core    sessionMaps
	// owned holds every map the session created, core or not: Close
	// frees them.
	owned  []*ebpf.Map
	reader *ringbuf.Reader
	record ringbuf.Record // reused by Read

	aggregations []*Aggregation
	aggMaps      map[*Aggregation]*ebpf.Map // this session's map of each aggregation
	watchHits    *ebpf.Map
	// lua is the Lua walk of Options.Lua, nil without one.
	lua *lua.Layout

	// AttachTime is how long loading and attaching took.
	AttachTime time.Duration
	// WatchAttach is how a watch reached its write sites, when the
	// session has one.
	WatchAttach WatchAttach
}

// sessionMaps are the maps every session creates (createMaps).
type sessionMaps struct {
	events *ebpf.Map // ring buffer of event records
	hits   *ebpf.Map // per-CPU hits, by program id
	lost   *ebpf.Map // per-CPU hits whose event or aggregation found no room
	saved  *ebpf.Map // roots saved at entry for return probes, per thread and function
}

// fds returns the file descriptors programs refer to the maps by.
func (c sessionMaps) fds() mapFDs {
	return mapFDs{events: c.events.FD(), hits: c.hits.FD(), lost: c.lost.FD(), saved: c.saved.FD()}
}

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
	for _, p := range probes {
		if len(p.LuaChunk) > 0 && opts.Lua == nil {
			return nil, fmt.Errorf("%s: %w: its filter on %s needs the Lua walk, which this trace has not (the note above says why)", p.Name, ErrNoLuaWalk, LuaChunk)
		}
	}
	s := &Session{probes: probes, WatchAttach: opts.WatchAttach, lua: opts.Lua}
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
			filter.taskBTF = haveTaskBTF(filter.realParentOff, filter.tgidOff) == nil
		}
	}
	if err := s.createMaps(len(probes), opts.RingBufferBytes); err != nil {
		return nil, err
	}
	m := s.core.fds()
	scratch, err := s.createAggregations(probes)
	if err != nil {
		return nil, err
	}
	if scratch != nil {
		m.scratch = scratch.FD()
		m.aggregations = map[*Aggregation]int{}
		for _, a := range s.aggregations {
			m.aggregations[a] = s.aggMaps[a].FD()
		}
	}

	stackBytes := opts.StackBytes
	if stackBytes == 0 {
		stackBytes = DefaultStackBytes
	}
	// Programs wake the reader once an eighth of the ring is pending.
	programs := plan(probes, filter, s.core.events.MaxEntries()/8, stackBytes, opts.Lua)
	var returns returnOffsets
	for _, p := range probes {
		if p.Stack {
			returns = loadReturnOffsets()
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
	executables := map[string]*link.Executable{}
	executable := func(fn *symbols.Function) (*link.Executable, error) {
		// A function of a module (ngx_stream_module.so, libc.so.6) is
		// probed in its own file; the rest in the executable at path.
		file := path
		if b := fn.Binary(); b != nil {
			file = b.Path
		}
		if ex, ok := executables[file]; ok {
			return ex, nil
		}
		ex, err := link.OpenExecutable(file)
		if err != nil {
			return nil, fmt.Errorf("open %s for uprobes: %w", file, err)
		}
		executables[file] = ex
		return ex, nil
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
		ex, err := executable(p.function)
		if err != nil {
			return nil, err
		}
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
		if err := s.attach(ex, p, m); err != nil {
			return nil, err
		}
	}
	if s.reader, err = ringbuf.NewReader(s.core.events); err != nil {
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	s.AttachTime = time.Since(start)
	return s, nil
}

// attach loads the program p and attaches it to its function, at entry
// (plus p.at) with a uprobe or at return with a uretprobe.
func (s *Session) attach(ex *link.Executable, p planned, m mapFDs) error {
	prog, err := load(p, m)
	if err != nil {
		return err
	}
	s.progs = append(s.progs, prog)
	fn := p.function
	uopts := &link.UprobeOptions{Address: fn.Offset + p.at}
	var l link.Link
	if p.isReturn {
		l, err = ex.Uretprobe(fn.Symbol, prog, uopts)
	} else {
		l, err = ex.Uprobe(fn.Symbol, prog, uopts)
	}
	if err != nil {
		err = uprobeRefused(err)
		return fmt.Errorf("attach %s to %s+%#x at file offset %#x: %w", probeKind(p.isReturn), fn.Symbol, p.at, fn.Offset+p.at, err)
	}
	s.links = append(s.links, l)
	return nil
}

// probeKind names the kernel mechanism of an entry or a return probe.
func probeKind(isReturn bool) string {
	if isReturn {
		return "uretprobe"
	}
	return "uprobe"
}

// createMaps creates the session's core maps: the ring buffer, the hit
// and lost counters with a slot per program, and the saved entry roots.
func (s *Session) createMaps(nprobes, ringBytes int) error {
	// Before Linux 5.11, maps count against RLIMIT_MEMLOCK (64 KiB by
	// default); later kernels charge the memory cgroup and ignore it.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising the memlock limit: %w", err)
	}
	if ringBytes == 0 {
		ringBytes = 4 << 20
	}
	page := os.Getpagesize()
	if ringBytes < page || ringBytes&(ringBytes-1) != 0 {
		return fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", ringBytes, page)
	}
	specs := []struct {
		m    **ebpf.Map
		spec *ebpf.MapSpec
	}{
		{&s.core.events, &ebpf.MapSpec{Name: "ngxp_events", Type: ebpf.RingBuf, MaxEntries: uint32(ringBytes)}},
		// Twice the probes: argument-saving programs count past the probes.
		{&s.core.hits, &ebpf.MapSpec{Name: "ngxp_hits", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * nprobes)}},
		{&s.core.lost, &ebpf.MapSpec{Name: "ngxp_lost", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * nprobes)}},
		{&s.core.saved, &ebpf.MapSpec{Name: "ngxp_saved", Type: ebpf.LRUHash, KeySize: savedKeySize, ValueSize: 8 * maxSavedRoots, MaxEntries: 16384}},
	}
	for _, c := range specs {
		m, err := ebpf.NewMap(c.spec)
		if err != nil {
			return fmt.Errorf("create map %s: %w", c.spec.Name, err)
		}
		s.owned = append(s.owned, m)
		*c.m = m
	}
	return nil
}

// Detach removes every probe but keeps the ring buffer and counters, so
// that the events already written can be drained (Flush) and counted
// exactly.
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
	for _, m := range s.owned {
		errs = append(errs, m.Close())
	}
	s.owned = nil
	return errors.Join(errs...)
}
