package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/probeset"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// cmdRun attaches a probe set: a script, the scripts that --probe flags
// stand for, or the default set; --stack adds the close stacks to the
// last two.
// runFlags are run's flags.
type runFlags struct {
	traceFlags
	script scriptFlags
	probes listFlag
	stacks bool
}

func (f *runFlags) register(fs *flag.FlagSet) {
	f.traceFlags.register(fs)
	f.script.register(fs)
	fs.Var(&f.probes, "probe", "probe `SPEC`: "+probeset.FlagSyntax+" (repeatable)")
	fs.BoolVar(&f.stacks, "stack", false, "add probes with stacks where nginx closes connections")
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	rf := runFlags{traceFlags: traceFlags{targetFlags: targetFlags{stderr: stderr}}}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	rf.register(fs)
	src, err := rf.script.parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case src != nil && len(rf.probes) > 0:
		return fmt.Errorf("%w: give a script or --probe, not both", errUsage)
	case src != nil && rf.stacks:
		return fmt.Errorf("%w: --stack adds close stacks to the default set or --probe; in a script, write stack in the probes that need one", errUsage)
	}
	if err := rf.check(); err != nil {
		return err
	}
	// Parse before anything else: a typo is reported the same with or
	// without root. The default set and --probe flags are script text;
	// the close stacks that --stack adds to them depend on the binary, so
	// that text is parsed again once the binary is open.
	var parsed *script.Script
	name, text := probeset.DefaultName, probeset.Default
	if len(rf.probes) > 0 {
		name = "--probe"
		if text, err = flagsScript(rf.probes); err != nil {
			return err
		}
	}
	if src != nil {
		parsed, err = src.parse()
	} else {
		parsed, err = script.ParseText(name, text, nil)
	}
	if err != nil {
		return err
	}
	// compile resolves the probes against one nginx: the target, or each
	// executable of the fleet with --all-nginx.
	compile := func(img *symbols.Image) (*script.Program, error) {
		p := parsed
		if rf.stacks {
			var err error
			if p, err = script.ParseText(name, text+probeset.CloseStacks(img.HasFunction), nil); err != nil {
				return nil, err
			}
		}
		return script.Compile(img, p)
	}
	conv := rf.converter()
	if rf.allNginx {
		return runFleet(ctx, &rf.traceFlags, stdout, stderr, func(img *symbols.Image) (*fleetProgram, error) {
			program, err := compile(img)
			if err != nil {
				return nil, err
			}
			return &fleetProgram{
				probes: program.Probes,
				handle: func(tr *tracer) func(probes.Event, *output.Stack) error { return runHandler(tr, program, conv) },
				done:   func(tr *tracer) error { return printAggregates(tr, program, conv) },
			}, nil
		})
	}

	t, img, start, err := rf.open(ctx, true)
	if err != nil {
		return err
	}
	defer img.Close()
	program, err := compile(img)
	if err != nil {
		return err
	}
	tr, err := attach(t, img, program.Probes, &rf.traceFlags, stdout, stderr)
	if err != nil {
		return err
	}
	defer tr.close()
	printAttachSummary(stderr, t, img, program.Probes, time.Since(start))
	tr.settle(anyStack(program.Probes))
	if err := tr.run(ctx, rf.duration, runHandler(tr, program, conv)); err != nil {
		return err
	}
	if err := printAggregates(tr, program, conv); err != nil {
		return err
	}
	return tr.finish()
}

// runHandler prints an event of a script's probes: a flip for a watch,
// else the event with its values as the script names them.
func runHandler(tr *tracer, program *script.Program, conv converter) func(probes.Event, *output.Stack) error {
	if !tr.exporting {
		conv = conv.reusing() // text and JSON are done with an event when Event returns
	}
	return func(ev probes.Event, st *output.Stack) error {
		if w := program.Watch(ev.Probe); w != nil {
			return tr.out.Flip(conv.flip(tr.wall(ev.TimeNS), ev, w.Decode(ev), st))
		}
		return tr.out.Event(conv.event(tr.wall(ev.TimeNS), ev, program.Format(ev.Probe), st))
	}
}

// printAggregates prints the script's aggregations, read from the
// kernel, at the end of a trace.
func printAggregates(tr *tracer, program *script.Program, conv converter) error {
	if len(program.Aggregations) == 0 {
		return nil
	}
	if err := tr.out.Aggregates(conv.aggregates(program.Aggregations, tr.sess.Aggregates())); err != nil {
		return err
	}
	return tr.buffered.Flush()
}

// flagsScript is the script that --probe flags stand for.
func flagsScript(specs []string) (string, error) {
	var text strings.Builder
	for _, spec := range specs {
		s, err := probeset.FromFlag(spec)
		if err != nil {
			return "", fmt.Errorf("%w: %v", errUsage, err)
		}
		text.WriteString(s)
	}
	return text.String(), nil
}

func anyStack(ps []*probes.Probe) bool {
	for _, p := range ps {
		if p.Stack {
			return true
		}
	}
	return false
}

// printAttachSummary says what was attached where, and where each
// module's debug info came from.
func printAttachSummary(w io.Writer, t *target.Target, img *symbols.Image, ps []*probes.Probe, took time.Duration) {
	who := "every process running it"
	switch {
	case t.Master:
		who = fmt.Sprintf("master %d and its workers %v (new workers included)", t.PID, t.Workers)
	case t.PID != 0:
		who = fmt.Sprintf("pid %d", t.PID)
	}
	fmt.Fprintf(w, "ngxprobe: attached %d probes to %s (debug info: %s), tracing %s, in %d ms\n",
		len(ps), output.Escape(t.Display), output.Escape(orNone(img.Main().DebugSource)), who, took.Milliseconds())
	for _, p := range ps {
		kind := "uprobe"
		if p.Return {
			kind = "uretprobe"
		}
		where := output.Escape(p.Function.Symbol)
		if p.At != 0 {
			where = fmt.Sprintf("%s+%#x", where, p.At)
		}
		if b := p.Function.Binary(); b != nil && b != img.Main() {
			where += " in " + output.Escape(symbols.ModuleName(b))
		}
		if p.Inlined != "" {
			where += " (" + output.Escape(p.Inlined) + ")"
		}
		fmt.Fprintf(w, "  %-10s %-42s %s at %#x (file offset %#x), %d values\n", kind, output.Escape(p.Name), where, p.Function.Address+p.At, p.Function.Offset+p.At, len(p.Values))
		for _, n := range p.Notes {
			fmt.Fprintf(w, "             note: %s\n", output.Escape(n))
		}
	}
	if len(t.Modules) > 0 {
		fmt.Fprintf(w, "  debug info:\n")
		for _, line := range debugSources(img, false) {
			fmt.Fprintf(w, "    %s\n", output.Escape(line))
		}
	}
}
