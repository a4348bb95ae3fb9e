package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// --all-nginx: every nginx master on the host, in every PID and mount
// namespace, found by content (target.Discoverer). Uprobes are per
// inode, so each executable is attached once, with no process filter:
// its probes fire in every process that runs it, whichever master that
// is. Executables are attached as their first master starts and
// detached when their last one exits; each event says which master,
// container and pod it came from.

// fleetProgram is what one executable of the fleet gets attached, and
// how its events are printed.
type fleetProgram struct {
	probes []*probes.Probe
	handle func(tr *tracer) func(probes.Event, *output.Stack) error
	// done runs when the executable's trace ends, before its summary.
	done func(tr *tracer) error
}

// fleetBuilder resolves the command's probes against one executable.
type fleetBuilder func(img *symbols.Image) (*fleetProgram, error)

// fleetScanInterval is how often /proc is scanned for masters: a new
// one is attached within two scans.
const fleetScanInterval = time.Second

// fleet is the set of executables traced.
type fleet struct {
	flags  *traceFlags
	build  fleetBuilder
	out    *fleetOutput
	stderr io.Writer

	mu      sync.Mutex
	masters map[int]target.Master // by pid, from the last scan
	running map[target.BinaryID]*fleetTrace
	wg      sync.WaitGroup
}

// fleetTrace is one executable's trace.
type fleetTrace struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func runFleet(ctx context.Context, flags *traceFlags, stdout, stderr io.Writer, build fleetBuilder) error {
	if err := probes.CheckSupport(); err != nil {
		return err
	}
	if flags.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flags.duration)
		defer cancel()
	}
	if !flags.noLua {
		// The Lua walk starts from nginx's globals at their addresses in
		// one process; masters of one executable load at different ones.
		flags.noLua = true
		fmt.Fprintf(stderr, "ngxprobe: note: --all-nginx reads no Lua frames (the walk needs one master's addresses: use -p for OpenResty's Lua stacks)\n")
	}
	flags.limits.applyTarget()
	opts, err := flags.debugOptions(ctx)
	if err != nil {
		return err
	}
	flags.debug = opts
	printer, buffered, export, err := newPrinter(flags, nil, stdout, stderr)
	if err != nil {
		return err
	}
	if export != nil {
		defer export.close()
	}
	f := &fleet{flags: flags, build: build, stderr: stderr, masters: map[int]target.Master{}, running: map[target.BinaryID]*fleetTrace{}}
	f.out = &fleetOutput{p: printer, w: buffered, origin: f.origin, masterOf: map[uint32]int{}}
	disc := target.NewDiscoverer("")

	start := time.Now()
	if err := f.scan(ctx, disc); err != nil {
		return err
	}
	f.mu.Lock()
	fmt.Fprintf(stderr, "ngxprobe: attached --all-nginx to %d nginx masters of %d executables in %d ms; new masters are attached as they start\n", len(f.masters), len(f.running), time.Since(start).Milliseconds())
	f.mu.Unlock()
	tick := time.NewTicker(fleetScanInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if err := f.scan(ctx, disc); err != nil {
				fmt.Fprintf(stderr, "ngxprobe: scanning for nginx masters: %v\n", err)
			}
		}
	}
	f.stopAll()
	return nil
}

// scan attaches the executables of new masters and detaches those whose
// last master exited.
func (f *fleet) scan(ctx context.Context, disc *target.Discoverer) error {
	masters, err := disc.Masters()
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	current := map[int]target.Master{}
	live := map[target.BinaryID][]target.Master{}
	for _, m := range masters {
		current[m.PID] = m
		live[m.Binary] = append(live[m.Binary], m)
	}
	for pid, m := range f.masters {
		if _, ok := current[pid]; !ok {
			fmt.Fprintf(f.stderr, "ngxprobe: nginx master %d (%s) exited\n", pid, output.Escape(m.Display))
		}
	}
	for pid, m := range current {
		if _, ok := f.masters[pid]; !ok {
			fmt.Fprintf(f.stderr, "ngxprobe: nginx master %d (%s%s) found\n", pid, output.Escape(m.Display), describeLabels(m.Labels))
		}
	}
	f.masters = current
	for id, ms := range live {
		if _, ok := f.running[id]; ok {
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		ft := &fleetTrace{cancel: cancel, done: make(chan struct{})}
		f.running[id] = ft
		f.wg.Add(1)
		attached := make(chan struct{})
		go func() {
			defer f.wg.Done()
			defer close(ft.done)
			f.trace(tctx, id, ms, attached)
		}()
		// Attach before the next scan: the first hits of a new master
		// are the ones an incident is about.
		f.mu.Unlock()
		<-attached
		f.mu.Lock()
	}
	for id, ft := range f.running {
		if _, ok := live[id]; !ok {
			ft.cancel()
			delete(f.running, id)
		}
	}
	return nil
}

// trace attaches the probes to one executable and prints its events
// until ctx ends (its last master exited, or the trace ended).
func (f *fleet) trace(ctx context.Context, id target.BinaryID, masters []target.Master, attached chan<- struct{}) {
	once := sync.OnceFunc(func() { close(attached) })
	defer once()
	m := masters[0]
	fail := func(err error) {
		fmt.Fprintf(f.stderr, "ngxprobe: nginx master %d (%s): not traced: %s\n", m.PID, output.Escape(m.Display), output.Escape(err.Error()))
	}
	start := time.Now()
	t := &target.Target{Path: m.Exe, Display: m.Display}
	mods, err := target.ModulesOf("", m.PID)
	if err != nil {
		fail(err)
		return
	}
	t.Modules = mods
	img, err := openImage(t, f.flags.debug)
	if err != nil {
		fail(err)
		return
	}
	defer img.Close()
	prog, err := f.build(img)
	if err != nil {
		fail(err)
		return
	}
	tr, err := attachTo(t, img, prog.probes, f.flags, f.out, bufio.NewWriter(io.Discard), f.stderr)
	if err != nil {
		fail(err)
		return
	}
	defer tr.close()
	tr.keepCaps = true
	var pids []string
	for _, m := range masters {
		pids = append(pids, fmt.Sprint(m.PID))
	}
	fmt.Fprintf(f.stderr, "ngxprobe: attached %d probes to %s (file %s, masters %s) in %d ms\n", len(prog.probes), output.Escape(m.Display), id, strings.Join(pids, " "), time.Since(start).Milliseconds())
	once()
	tr.settle(anyStack(prog.probes))
	if err := tr.run(ctx, 0, prog.handle(tr)); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(f.stderr, "ngxprobe: %s: %v\n", output.Escape(m.Display), err)
	}
	if prog.done != nil {
		if err := prog.done(tr); err != nil {
			fmt.Fprintf(f.stderr, "ngxprobe: %s: %v\n", output.Escape(m.Display), err)
		}
	}
	fmt.Fprintf(f.stderr, "ngxprobe: detached from %s (file %s)\n", output.Escape(m.Display), id)
	_ = tr.finish()
}

// stopAll detaches every executable and waits for their summaries.
func (f *fleet) stopAll() {
	f.mu.Lock()
	for id, ft := range f.running {
		ft.cancel()
		delete(f.running, id)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// origin names the master of a traced process, and where it runs.
func (f *fleet) origin(master int) *output.Origin {
	f.mu.Lock()
	m, ok := f.masters[master]
	f.mu.Unlock()
	o := &output.Origin{MasterPID: master}
	if ok {
		o.Binary = m.Display
		o.ContainerID, o.PodName, o.PodNamespace, o.ContainerName = m.Labels.ContainerID, m.Labels.PodName, m.Labels.PodNamespace, m.Labels.ContainerName
	}
	return o
}

func describeLabels(l target.Labels) string {
	var parts []string
	if l.ContainerID != "" {
		parts = append(parts, "container "+l.ContainerID[:min(12, len(l.ContainerID))])
	}
	if l.PodName != "" {
		parts = append(parts, "pod "+l.PodNamespace+"/"+l.PodName)
	}
	if len(parts) == 0 {
		return ""
	}
	return ", " + strings.Join(parts, ", ")
}

// fleetOutput is the printer the executables' tracers share: one at a
// time, each event flushed whole, labelled with its origin.
type fleetOutput struct {
	mu     sync.Mutex
	p      output.Printer
	w      *bufio.Writer
	origin func(master int) *output.Origin
	// masterOf caches each traced process's master.
	masterOf map[uint32]int
}

// maxMasterCache bounds masterOf: workers come and go with reloads.
const maxMasterCache = 4096

func (o *fleetOutput) originOf(pid uint32) *output.Origin {
	master, ok := o.masterOf[pid]
	if !ok {
		master = target.MasterOf("", int(pid))
		if len(o.masterOf) >= maxMasterCache {
			clear(o.masterOf)
		}
		o.masterOf[pid] = master
	}
	return o.origin(master)
}

// print writes through the shared printer, under its lock, and flushes:
// the tracers of the fleet's executables print concurrently.
func (o *fleetOutput) print(write func() error) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := write(); err != nil {
		return err
	}
	return o.w.Flush()
}

func (o *fleetOutput) Event(ev output.Event) error {
	return o.print(func() error { ev.Origin = o.originOf(ev.PID); return o.p.Event(ev) })
}

func (o *fleetOutput) Flip(fl output.Flip) error {
	return o.print(func() error { fl.Origin = o.originOf(fl.PID); return o.p.Flip(fl) })
}

func (o *fleetOutput) Aggregates(aggs []output.Aggregate) error {
	return o.print(func() error { return o.p.Aggregates(aggs) })
}

func (o *fleetOutput) Summary(s output.Summary) error {
	return o.print(func() error { return o.p.Summary(s) })
}

// Verdict and Closes need a printer that prints verdicts: every one
// -o makes does (output.VerdictPrinter's assertions, otlp's).
func (o *fleetOutput) Verdict(v output.Verdict) error {
	return o.print(func() error { v.Origin = o.originOf(v.PID); return o.p.(output.VerdictPrinter).Verdict(v) })
}

func (o *fleetOutput) Closes(c output.Closes) error {
	return o.print(func() error { return o.p.(output.VerdictPrinter).Closes(c) })
}

// closes prints through the fleet's printer too.
var _ output.VerdictPrinter = (*fleetOutput)(nil)
