package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ngxprobe/ngxprobe/closes"
	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// closesFlags are closes' flags.
type closesFlags struct {
	traceFlags
	stacks, all bool
	interval    time.Duration
}

func (f *closesFlags) register(fs *flag.FlagSet) {
	f.traceFlags.register(fs)
	fs.BoolVar(&f.stacks, "stack", false, "print each verdict's stack (the stack is captured anyway, to find the code that decided)")
	fs.BoolVar(&f.all, "all", false, "print a verdict, marked healthy, for every healthy close too: one event per connection (the counts stay the same)")
	fs.DurationVar(&f.interval, "interval", 0, "print the counts of healthy and abnormal closes this often (default: at exit only)")
}

// cmdCloses prints one verdict per abnormal end of a connection: who
// ended it, how, and the code that decided (package closes).
func cmdCloses(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cf := closesFlags{traceFlags: traceFlags{targetFlags: targetFlags{stderr: stderr}}}
	fs := flag.NewFlagSet("closes", flag.ContinueOnError)
	cf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: closes takes no arguments (got %q); it attaches its own probe set", errUsage, pos[0])
	}
	if err := cf.check(); err != nil {
		return err
	}
	conv := cf.converter()
	if cf.allNginx {
		return runFleet(ctx, &cf.traceFlags, stdout, stderr, func(img *symbols.Image) (*fleetProgram, error) {
			program, err := closesProgram(img, cf.all, stderr)
			if err != nil {
				return nil, err
			}
			var finish func() error
			return &fleetProgram{
				probes: program.Probes,
				handle: func(tr *tracer) func(probes.Event, *output.Stack) error {
					var handle func(probes.Event, *output.Stack) error
					handle, finish = closesTrace(tr, program, &cf, conv)
					return handle
				},
				done: func(*tracer) error { return finish() },
			}, nil
		})
	}
	t, img, start, err := cf.open(ctx, true)
	if err != nil {
		return err
	}
	defer img.Close()
	program, err := closesProgram(img, cf.all, stderr)
	if err != nil {
		return err
	}
	tr, err := attach(t, img, program.Probes, &cf.traceFlags, stdout, stderr)
	if err != nil {
		return err
	}
	defer tr.close()
	printAttachSummary(stderr, t, img, program.Probes, time.Since(start))
	tr.settle(true)
	handle, finish := closesTrace(tr, program, &cf, conv)
	if err := tr.run(ctx, cf.duration, handle); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	return tr.finish()
}

// closesProgram compiles the closes probe set for one nginx: the HTTP/2
// and stream parts where it has them; with all, healthy closes are sent
// as events rather than counted in the kernel.
func closesProgram(img *symbols.Image, all bool, notes io.Writer) (*script.Program, error) {
	sites, err := closes.FindSites(img)
	if err != nil {
		// The rest of the verdicts stand without them.
		fmt.Fprintf(notes, "ngxprobe: note: %v\n", err)
	}
	parsed, err := script.ParseText(closes.Name, closes.ProbeSet(img.HasFunction, sites, all), nil)
	if err != nil {
		return nil, err
	}
	return script.Compile(img, parsed)
}

// closesTrace sets up one trace's verdicts: it returns the event handler
// (events go to a closes.Engine), sets the tracer's tick (verdicts of
// incidents gone quiet, and the --interval counts), and returns finish,
// which prints what is left and the final counts once the trace ends.
func closesTrace(tr *tracer, program *script.Program, cf *closesFlags, conv converter) (func(probes.Event, *output.Stack) error, func() error) {
	vp := tr.out.(output.VerdictPrinter) // every printer of -o prints verdicts
	engine := &closes.Engine{All: cf.all, Symbolize: func(pid uint32, addr uint64) string {
		frames := tr.unwinder.Symbolize(int(pid), addr)
		if len(frames) == 0 {
			return ""
		}
		return frames[len(frames)-1].Symbol
	}}
	print := func(vs []output.Verdict) error {
		for _, v := range vs {
			if !cf.stacks {
				v.Stack = nil
			}
			if err := vp.Verdict(v); err != nil {
				return err
			}
		}
		return nil
	}
	counts := func(final bool) output.Closes {
		c := output.Closes{Time: time.Now(), Final: final, Verdicts: engine.Verdicts()}
		var healthy, keepaliveLimit *output.Aggregate
		for _, a := range conv.aggregates(program.Aggregations, tr.sess.Aggregates()) {
			switch a.Name {
			case closes.HealthyAggregation:
				healthy = &a
			case closes.KeepaliveLimitAggregation:
				keepaliveLimit = &a
			}
		}
		c.Healthy = engine.Healthy(healthy, keepaliveLimit)
		for _, pc := range tr.sess.Counts() {
			c.Lost += pc.Lost
		}
		return c
	}
	lastCount := time.Now()
	tr.tick = func(now time.Time) error {
		if err := print(engine.Flush(now, false)); err != nil {
			return err
		}
		if cf.interval > 0 && now.Sub(lastCount) >= cf.interval {
			lastCount = now
			return vp.Closes(counts(false))
		}
		return nil
	}
	handle := func(ev probes.Event, st *output.Stack) error {
		return print(engine.Add(conv.event(tr.wall(ev.TimeNS), ev, program.Format(ev.Probe), st)))
	}
	finish := func() error {
		if err := print(engine.Flush(time.Now(), true)); err != nil {
			return err
		}
		if err := vp.Closes(counts(true)); err != nil {
			return err
		}
		return tr.buffered.Flush()
	}
	return handle, finish
}
