package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// pollInterval bounds how long an event waits in the ring buffer before it
// is printed; programs wake the reader early only when the ring fills.
const pollInterval = 50 * time.Millisecond

// The queue between the ring and the printer holds records read but not
// yet printed: the reader keeps draining the ring while the first stacks
// index their modules (a few hundred ms for a libc with debug info), and
// past the queue the ring fills and the kernel counts what is lost.
// Records, not decoded events (several times larger), are queued, and the
// queue is bounded by bytes too: default-set records (under 1 KiB) fill
// 8 MiB, while stack records (8 KiB each) stop at 64 MiB.
const (
	maxQueued  = 16384
	queueBytes = 64 << 20
)

// queueLen is how many records of up to recordSize bytes the queue holds.
func queueLen(recordSize int) int {
	return min(maxQueued, max(256, queueBytes/max(recordSize, 1)))
}

// tracer is one attached trace, shared by run and watch: it owns the
// session, the stack unwinder, the printer, the loop that reads and prints
// events, and the summary printed when the trace ends.
type tracer struct {
	target   *target.Target
	sess     *probes.Session
	unwinder *stacks.Unwinder
	buffered *bufio.Writer
	out      output.Printer
	// diag writes the summary, in the output's format, to stderr.
	diag   output.Printer
	stderr io.Writer
	// bootWall anchors the probes' CLOCK_MONOTONIC timestamps to the
	// wall clock.
	bootWall time.Time
	// background holds the stack indexer started by settle and the
	// module watcher; close waits for them.
	background sync.WaitGroup
	delivered  map[*probes.Probe]uint64
	// luaNames names the functions of Lua frames, nil without a Lua walk.
	luaNames *luaNamer
	// keepCaps: settle drops no capability (--all-nginx attaches to
	// masters that start later).
	keepCaps bool
	// export is -o otlp's exporter, which close flushes; exporting says
	// the summary goes to out too (the Collector), besides stderr.
	export    *exportPrinter
	exporting bool
	// tick, when set, runs every tickEvery while the trace runs, between
	// events (closes prints the verdicts whose incident went quiet).
	tick func(time.Time) error
}

// tickEvery is how often tracer.tick runs.
const tickEvery = 100 * time.Millisecond

// attach attaches the probes to the target and makes the printers. The
// caller must close the tracer.
func attach(t *target.Target, img *symbols.Image, ps []*probes.Probe, flags *traceFlags, stdout, stderr io.Writer) (*tracer, error) {
	out, buffered, export, err := newPrinter(flags, t, stdout, stderr)
	if err != nil {
		return nil, err
	}
	tr, err := attachTo(t, img, ps, flags, out, buffered, stderr)
	if err != nil {
		if export != nil {
			export.close()
		}
		return nil, err
	}
	tr.export = export
	return tr, nil
}

// attachTo is attach with the printer given: --all-nginx shares one among
// the tracers of its executables. buffered is flushed when the reader has
// caught up.
func attachTo(t *target.Target, img *symbols.Image, ps []*probes.Probe, flags *traceFlags, out output.Printer, buffered *bufio.Writer, stderr io.Writer) (*tracer, error) {
	diagFormat := flags.format
	if diagFormat == formatOTLP {
		diagFormat = "text" // the summary goes to the Collector too
	}
	diag, err := output.New(diagFormat, stderr)
	if err != nil {
		return nil, fmt.Errorf("%w: -o: %v", errUsage, err)
	}
	opts := flags.attachOptions(t)
	if !flags.noLua && (anyStack(ps) || anyLua(ps)) {
		opts.Lua = luaLayout(img, t, stderr)
	}
	sess, err := probes.Attach(t.Path, ps, opts)
	if err != nil {
		return nil, err
	}

	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	unwinder := stacks.NewUnwinder("")
	unwinder.Debug = flags.debug // module frames get their names from the same debug info
	flags.limits.unwinder(unwinder)
	var names *luaNamer
	if opts.Lua != nil {
		names = newLuaNamer(opts.Lua)
	}
	return &tracer{
		luaNames:  names,
		exporting: flags.format == formatOTLP,
		target:    t,
		sess:      sess,
		unwinder:  unwinder,
		buffered:  buffered,
		out:       out,
		diag:      diag,
		stderr:    stderr,
		bootWall:  time.Now().Add(-time.Duration(ts.Nano())),
		delivered: map[*probes.Probe]uint64{},
	}, nil
}

// close detaches (if the trace has not ended) and frees everything, after
// the stack indexer has stopped.
func (tr *tracer) close() {
	tr.background.Wait()
	tr.unwinder.Close()
	if tr.export != nil {
		tr.export.close()
	}
	_ = tr.sess.Close()
}

// wall converts a probe's CLOCK_MONOTONIC timestamp.
func (tr *tracer) wall(ns uint64) time.Time { return tr.bootWall.Add(time.Duration(ns)) }

// settle follows an attach: with stacks, it indexes the workers' modules
// in the background, off the attach path, so that the first stack does
// not stall the reader and a worker that exits before its events are read
// still gets names ("stacks ready" says when; it takes about a second of
// CPU). Then the trace drops the capabilities it no longer needs: after
// the indexing, which may read a deleted module through
// /proc/PID/map_files (CAP_SYS_ADMIN); the workers a reload starts map the
// same files, found again by path.
func (tr *tracer) settle(stacks bool) {
	drop := func() {
		if tr.keepCaps {
			return
		}
		if err := dropCapabilities(); err != nil {
			fmt.Fprintf(tr.stderr, "ngxprobe: note: capabilities not dropped after attach: %v\n", err)
		}
	}
	if !stacks {
		drop()
		return
	}
	tr.background.Add(1)
	go func() {
		defer tr.background.Done()
		start := time.Now()
		for _, pid := range tr.target.Workers {
			tr.unwinder.Prepare(pid)
		}
		fmt.Fprintf(tr.stderr, "ngxprobe: stacks ready: modules of %d processes indexed in %d ms\n", len(tr.target.Workers), time.Since(start).Milliseconds())
		drop()
	}()
}

// moduleCheckInterval is how often a master's mappings are read for
// modules that a reload loaded after attach.
const moduleCheckInterval = 2 * time.Second

// watchModules reports, once each, the files a master maps as code after
// attach: a reload with a new load_module. Their functions are not
// probed; saying so beats missing them silently.
//
// When the master exits, the trace ends (stop): nothing of it is left to
// trace, and the next nginx is another process.
func (tr *tracer) watchModules(ctx context.Context, stop context.CancelFunc) {
	if !tr.target.Master {
		return
	}
	known := map[string]bool{}
	for _, m := range tr.target.Modules {
		known[m.MappedPath] = true
	}
	tr.background.Add(1)
	go func() {
		defer tr.background.Done()
		tick := time.NewTicker(moduleCheckInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			mods, err := target.ModulesOf("", tr.target.PID)
			if err != nil {
				if !processAlive(tr.target.PID) {
					fmt.Fprintf(tr.stderr, "ngxprobe: nginx master %d exited; detaching\n", tr.target.PID)
					stop()
				}
				return
			}
			for _, m := range mods {
				if !known[m.MappedPath] {
					known[m.MappedPath] = true
					fmt.Fprintf(tr.stderr, "ngxprobe: note: nginx %d mapped %s after attach (a reload with a new load_module?); its functions are not probed: run ngxprobe again to probe them\n", tr.target.PID, output.Escape(m.MappedPath))
				}
			}
		}
	}()
}

// processAlive reports whether pid exists (and is not a zombie).
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// flushEvery is how long printed events may wait in the buffered
// writer: the loop flushes when it has caught up with the ring, but at
// most once per flushEvery, so that a busy trace makes one write(2) per
// batch rather than per event; a timer flushes what the last batch left.
const flushEvery = 10 * time.Millisecond

// The records the printer is done with go back to the reader, up to
// freeRecords of them: 1 MiB of records, more than the 512 KiB that
// programs let pend in the default 4 MiB ring before they wake the
// reader, which then reads them all at once.
func freeRecords(recordSize int) int {
	return min(maxQueued, max(16, (1<<20)/max(recordSize, 1)))
}

// run reads and prints events until ctx ends or the duration passes,
// then detaches and drains: every hit is then either printed or counted
// as lost. handle prints one event with its unwound stack.
func (tr *tracer) run(ctx context.Context, duration time.Duration, handle func(probes.Event, *output.Stack) error) error {
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tr.watchModules(ctx, cancel)
	records := make(chan []byte, queueLen(tr.sess.MaxRecordSize()))
	// Decoded events refer to nothing in their record, and the handlers
	// keep nothing of an event but what they convert from its values: a
	// printed record's memory goes back to the reader, and the values
	// are decoded into the same memory from one event to the next.
	free := make(chan []byte, freeRecords(tr.sess.MaxRecordSize()))
	var decoded probes.DecodeBuffer
	readDone := make(chan error, 1)
	go func() { readDone <- tr.readRecords(ctx, records, free) }()
	var printErr error
	var ticks <-chan time.Time
	if tr.tick != nil {
		ticker := time.NewTicker(tickEvery)
		defer ticker.Stop()
		ticks = ticker.C
	}
	// flushTimer runs while printed events wait in the writer for
	// flushEvery to pass; flushes is its channel then, nil otherwise.
	flushTimer := time.NewTimer(time.Hour)
	flushTimer.Stop()
	defer flushTimer.Stop()
	var flushes <-chan time.Time
	var lastFlush time.Time
	flush := func(now time.Time) error {
		lastFlush = now
		if flushes != nil {
			flushTimer.Stop()
			flushes = nil
		}
		return tr.buffered.Flush()
	}
	for {
		// A record waiting is taken without the select below, which
		// locks every channel it waits on: the ticks do nothing while
		// records wait, and the writer flushes itself when full.
		var raw []byte
		open, got := true, false
		select {
		case raw, open = <-records:
			got = true
		default:
		}
		if !got {
			select {
			case raw, open = <-records:
			case now := <-ticks:
				// Only once the queue is drained: while records wait, the
				// time since an incident's last event says nothing about
				// what is still to come for it.
				if printErr == nil && len(records) == 0 {
					if printErr = tr.tick(now); printErr == nil {
						printErr = flush(now)
					}
					if printErr != nil {
						cancel() // as a failed print does: stop, and drain
					}
				}
				continue
			case now := <-flushes:
				flushes = nil
				if printErr == nil {
					if printErr = flush(now); printErr != nil {
						cancel()
					}
				}
				continue
			}
		}
		if !open {
			break
		}
		if printErr != nil {
			continue // drain, so that the reader can finish
		}
		printErr = tr.print(raw, &decoded, handle)
		select {
		case free <- raw:
		default:
		}
		if printErr == nil && len(records) == 0 {
			// Caught up: show what we have, now or, when the last
			// flush was recent, once flushEvery has passed since.
			now := time.Now()
			if wait := flushEvery - now.Sub(lastFlush); wait <= 0 {
				printErr = flush(now)
			} else if flushes == nil && tr.buffered.Buffered() > 0 {
				flushTimer.Reset(wait)
				flushes = flushTimer.C
			}
		}
		if printErr != nil {
			cancel()
		}
	}
	if err := <-readDone; err != nil {
		return err
	}
	if printErr != nil {
		return printErr
	}
	return tr.buffered.Flush()
}

// print decodes a record, with its values in buf's memory, and hands the
// event to handle: the handlers convert what they keep (the closes
// engine, the OTLP exporter keep output events), so the next record is
// decoded into the same memory.
func (tr *tracer) print(raw []byte, buf *probes.DecodeBuffer, handle func(probes.Event, *output.Stack) error) error {
	ev, ok, err := tr.sess.DecodeInto(raw, buf)
	if err != nil || !ok {
		return err
	}
	tr.delivered[ev.Probe]++
	var st *output.Stack
	if ev.Stack != nil {
		st = stackOutput(tr.unwinder.Unwind(*ev.Stack))
		if ev.Lua != nil {
			tr.luaNames.name(int(ev.PID), ev.Lua)
			st = withLuaFrames(st, ev.Lua, tr.unwinder, int(ev.PID))
		}
	}
	return handle(ev, st)
}

// readRecords moves records from the ring to out until ctx ends, then
// detaches and drains the ring with a flush. It copies them into the
// memory of the records the printer sends back on free.
func (tr *tracer) readRecords(ctx context.Context, out chan<- []byte, free <-chan []byte) error {
	defer close(out)
	// buf is the memory the next record goes to, nil for new memory.
	var buf []byte
	read := func() ([]byte, error) {
		if buf == nil {
			select {
			case buf = <-free:
			default:
			}
		}
		raw, err := tr.sess.ReadRecordInto(buf)
		if err == nil {
			buf = nil
		}
		return raw, err
	}
	// The deadline bounds the wait for records, so it is set only when
	// the next read may wait: after a read that left the ring empty, or
	// one that did not return a record.
	wait := true
	for ctx.Err() == nil {
		if wait || tr.sess.Pending() == 0 {
			tr.sess.SetDeadline(time.Now().Add(pollInterval))
		}
		raw, err := read()
		wait = err != nil
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return err
		}
		out <- raw
	}
	if err := tr.sess.Detach(); err != nil {
		fmt.Fprintf(tr.stderr, "ngxprobe: detach: %v\n", err)
	}
	tr.sess.SetDeadline(time.Time{})
	if err := tr.sess.Flush(); err != nil {
		return fmt.Errorf("drain the ring buffer: %w", err)
	}
	for {
		raw, err := read()
		switch {
		case errors.Is(err, probes.ErrFlushed):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A deadline passed during the last poll: the reader reports
			// it once, then reads on.
			continue
		case err != nil:
			return fmt.Errorf("drain the ring buffer: %w", err)
		}
		out <- raw
	}
}

// finish closes the session and prints the summary: hits, events and
// lost events per probe. Aggregations must be read before.
func (tr *tracer) finish() error {
	counts := tr.sess.Counts()
	if err := tr.sess.Close(); err != nil {
		fmt.Fprintf(tr.stderr, "ngxprobe: close: %v\n", err)
	}
	var s output.Summary
	for _, c := range counts {
		s.Probes = append(s.Probes, output.ProbeCount{Probe: c.Probe.Name, Function: c.Probe.Function.Symbol, Hits: c.Hits, Events: tr.delivered[c.Probe], Lost: c.Lost})
	}
	if tr.exporting {
		if err := tr.out.Summary(s); err != nil {
			fmt.Fprintf(tr.stderr, "ngxprobe: otlp: summary: %v\n", err)
		}
	}
	return tr.diag.Summary(s)
}

// stackOutput is an unwound stack in the output model.
func stackOutput(st stacks.Stack) *output.Stack {
	out := &output.Stack{Frames: make([]output.Frame, len(st.Frames)), Truncated: st.Truncated, Reason: limitNames.Replace(st.Reason)}
	for _, n := range st.Notes {
		out.Notes = append(out.Notes, limitNames.Replace(n))
	}
	for i, f := range st.Frames {
		out.Frames[i] = output.Frame{Module: f.Module, Address: f.Address, Symbol: f.Symbol, Offset: f.Offset, File: f.File, Line: f.Line, Inlined: f.Inlined}
	}
	return out
}
