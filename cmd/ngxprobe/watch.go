package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
	"github.com/ngxprobe/ngxprobe/watch/flips"
)

var watchModes = map[string]flips.Mode{"exact": flips.Exact, "diff": flips.Diff, "both": flips.Both}

// cmdWatch reports flips of a connection's field: exact mode probes the
// instructions that write it, diff mode compares it between functions.
// watchFlags are watch's flags.
type watchFlags struct {
	traceFlags
	mode, attach               string
	explain, noStack, allSites bool
	at                         listFlag
}

func (f *watchFlags) register(fs *flag.FlagSet) {
	f.traceFlags.register(fs)
	fs.StringVar(&f.mode, "mode", "exact", "exact, diff or both")
	fs.BoolVar(&f.explain, "explain", false, "list the write sites and probe points, attach nothing")
	fs.BoolVar(&f.noStack, "no-stack", false, "do not capture a stack per flip")
	fs.BoolVar(&f.allSites, "all-sites", false, "also probe wide stores not known to write the watched type")
	fs.StringVar(&f.attach, "attach", "auto", "how probes reach the write sites: auto (the best the kernel has), multi (uprobe_multi, Linux 6.6), cookie (a uprobe per site, Linux 5.15) or per-site (a program per site)")
	fs.Var(&f.at, "at", "diff mode: compare at entry and return of `FUNC[:CONN]` instead of the default points (repeatable); CONN names the connection, c by default")
}

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	wf := watchFlags{traceFlags: traceFlags{targetFlags: targetFlags{stderr: stderr}}}
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	wf.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: watch needs one EXPR, e.g. 'c->read->eof'", errUsage)
	}
	m, ok := watchModes[wf.mode]
	if !ok {
		return fmt.Errorf("%w: --mode %q: want exact, diff or both", errUsage, wf.mode)
	}
	if err := wf.check(); err != nil {
		return err
	}
	how, ok := parseWatchAttach(wf.attach)
	if !ok {
		return fmt.Errorf("%w: --attach %q: want auto, multi, cookie or per-site", errUsage, wf.attach)
	}
	wf.watchAttach = how
	if _, err := flips.ParseExpr(pos[0]); err != nil {
		return err
	}
	opts := flips.Options{Mode: m, Stack: !wf.noStack, AllSites: wf.allSites}
	for _, a := range wf.at {
		fn, key, _ := strings.Cut(a, ":")
		if key == "" {
			key = "c"
		}
		opts.DiffPoints = append(opts.DiffPoints, flips.DiffPoint{Function: fn, Key: key, Return: true})
	}
	prepare := func(img *symbols.Image) (*flips.Program, error) {
		prog, err := flips.Prepare(img.Main(), pos[0], opts)
		if err != nil {
			return nil, watchAdvice(err)
		}
		return prog, nil
	}
	if wf.allNginx {
		if wf.explain {
			return fmt.Errorf("%w: --explain analyses one nginx: give -p or --binary", errUsage)
		}
		conv := wf.converter()
		return runFleet(ctx, &wf.traceFlags, stdout, stderr, func(img *symbols.Image) (*fleetProgram, error) {
			prog, err := prepare(img)
			if err != nil {
				return nil, err
			}
			return &fleetProgram{
				probes: prog.Probes,
				handle: func(tr *tracer) func(probes.Event, *output.Stack) error {
					return func(ev probes.Event, st *output.Stack) error {
						return tr.out.Flip(conv.flip(tr.wall(ev.TimeNS), ev, prog.Decode(ev), st))
					}
				},
				done: func(tr *tracer) error {
					printHotSites(stderr, prog, tr.sess.WatchHits())
					return nil
				},
			}, nil
		})
	}
	t, img, start, err := wf.open(ctx, !wf.explain)
	if err != nil {
		return err
	}
	defer img.Close()
	prog, err := prepare(img)
	if err != nil {
		return err
	}
	if wf.explain {
		return explainWatch(stdout, prog, time.Since(start))
	}
	tr, err := attach(t, img, prog.Probes, &wf.traceFlags, stdout, stderr)
	if err != nil {
		return err
	}
	defer tr.close()
	fmt.Fprintf(stderr, "ngxprobe: attached watch %s (%s.%s, byte %d bit %d) to %s in %d ms: %d write sites probed of %d found (%s), %d diff points\n",
		prog.Expr.Text, prog.Field.Type, prog.Field.Member, prog.Field.Offset, prog.Field.BitOffset, t.Display, time.Since(start).Milliseconds(), probedSites(prog), len(prog.Sites), tr.sess.WatchAttach, len(prog.Points))
	for _, n := range prog.Notes {
		fmt.Fprintf(stderr, "  note: %s\n", output.Escape(n))
	}
	tr.settle(!wf.noStack)
	conv := wf.converter()
	err = tr.run(ctx, wf.duration, func(ev probes.Event, st *output.Stack) error {
		return tr.out.Flip(conv.flip(tr.wall(ev.TimeNS), ev, prog.Decode(ev), st))
	})
	if err != nil {
		return err
	}
	printHotSites(stderr, prog, tr.sess.WatchHits())
	return tr.finish()
}

// parseWatchAttach reads --attach.
func parseWatchAttach(name string) (probes.WatchAttach, bool) {
	for how, n := range probes.WatchAttachNames {
		if n == name {
			return how, true
		}
	}
	return probes.WatchAuto, false
}

// watchAdvice adds the flags that answer a watch that cannot be
// prepared as asked.
func watchAdvice(err error) error {
	switch {
	case errors.Is(err, flips.ErrNoSites):
		return fmt.Errorf("%w; --mode diff compares the field where nginx reads connections instead", err)
	case errors.Is(err, flips.ErrNoProbedSites):
		return fmt.Errorf("%w; --all-sites probes them all, --explain lists them", err)
	}
	return err
}

func probedSites(prog *flips.Program) int {
	n := 0
	for _, ok := range prog.Probed {
		if ok {
			n++
		}
	}
	return n
}

// printHotSites names the write sites that trapped most: each hit costs
// a trap whether or not the field flips, so these are the watch's cost.
func printHotSites(w io.Writer, prog *flips.Program, hits []uint64) {
	type hot struct {
		site watch.Site
		n    uint64
	}
	var hs []hot
	var total uint64
	for cookie, n := range hits {
		if i := prog.SiteOf(cookie); i >= 0 && n > 0 {
			hs = append(hs, hot{prog.Sites[i], n})
			total += n
		}
	}
	if len(hs) == 0 {
		return
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].n > hs[j].n })
	fmt.Fprintf(w, "ngxprobe: %d write-site hits; the busiest sites:\n", total)
	for _, h := range hs[:min(len(hs), 8)] {
		fmt.Fprintf(w, "  %8d  %s\n", h.n, output.Escape(h.site.String()))
	}
}

func explainWatch(w io.Writer, prog *flips.Program, took time.Duration) error {
	fmt.Fprintf(w, "watch %s: %s.%s at byte %d, bit %d, %d bits; %d write sites, %d probed (resolved in %d ms)\n",
		prog.Expr.Text, prog.Field.Type, prog.Field.Member, prog.Field.Offset, prog.Field.BitOffset, prog.Field.BitSize, len(prog.Sites), probedSites(prog), took.Milliseconds())
	for i, s := range prog.Sites {
		how := "probed: new value computed from the instruction"
		switch {
		case !prog.Probed[i]:
			how = "NOT probed: " + prog.Skipped[i]
		case !s.Effect.Valid:
			how = fmt.Sprintf("probed before and after (effect not modelled: %s)", s.Reason)
		}
		fmt.Fprintf(w, "  %s\n      %s\n", output.Escape(s.String()), output.Escape(how))
	}
	if len(prog.Points) > 0 {
		fmt.Fprintf(w, "diff points: %s\n", strings.Join(prog.Points, ", "))
	}
	for _, n := range prog.Notes {
		fmt.Fprintf(w, "note: %s\n", output.Escape(n))
	}
	return nil
}
