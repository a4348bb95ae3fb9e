// Command ngxprobe traces a live nginx with eBPF uprobes: which code closed
// a connection, and with which flags.
//
//	ngxprobe run -p PID                 default probe set on a master and its workers
//	ngxprobe run -p PID SCRIPT          a probe-set script (see examples/)
//	ngxprobe check --binary PATH SCRIPT resolve a script without attaching
//	ngxprobe run --binary PATH --probe 'ngx_unix_recv%return:$retval,c->number'
//	ngxprobe funcs --binary PATH [PATTERN]
//	ngxprobe fields --binary PATH TYPE
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/probeset"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
	"github.com/ngxprobe/ngxprobe/watch"
)

const usage = `usage:
  ngxprobe run    [-p PID | --binary PATH] [--probe SPEC]... [-o text|json] [--duration D]
  ngxprobe run    [-p PID | --binary PATH] [-o text|json] [--duration D] SCRIPT | -e 'TEXT'
  ngxprobe check  [-p PID | --binary PATH] SCRIPT | -e 'TEXT'
  ngxprobe watch  [-p PID | --binary PATH] [--mode exact|diff|both] [--explain] [-o text|json] [--duration D] EXPR
  ngxprobe funcs  [-p PID | --binary PATH] [PATTERN]
  ngxprobe fields [-p PID | --binary PATH] TYPE

-p PID takes an nginx master (its workers are traced, also after a reload)
or one worker. --binary traces every process running that executable.
SPEC is FUNCTION[%return][:EXPR,EXPR...], e.g. 'ngx_unix_recv%return:$retval,c->read->eof'.
A SCRIPT is a probe set: 'ngx_http_finalize_request /rc == 499/ { print(r->connection->number); stack }'.
watch reports where a field of a connection flips, e.g. 'c->read->eof', with
the writing line and a stack; --explain lists the write sites without attaching.
check parses and resolves a script against the binary's DWARF without root.
Without --probe or a script, run uses the default set: ngx_http_finalize_request,
ngx_unix_recv (at return) and ngx_http_ssl_handshake.
`

// pollInterval bounds how long an event waits in the ring buffer before it
// is printed; programs wake the reader early only when the ring fills.
const pollInterval = 50 * time.Millisecond

// errUsage marks errors caused by the command line (exit status 2).
var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "ngxprobe: %v\n", err)
	if errors.Is(err, errUsage) {
		fmt.Fprint(os.Stderr, "\n"+usage)
		os.Exit(2)
	}
	os.Exit(1)
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout)
	case "watch":
		return cmdWatch(args, stdout, stderr)
	case "funcs":
		return cmdFuncs(args, stdout)
	case "fields":
		return cmdFields(args, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

// common holds the flags every command takes.
type common struct {
	pid    int
	binary string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.IntVar(&c.pid, "p", 0, "nginx master or worker `PID`")
	fs.StringVar(&c.binary, "binary", "", "nginx executable `PATH`")
}

func (c *common) target() (*target.Target, error) {
	switch {
	case c.pid != 0 && c.binary != "":
		return nil, fmt.Errorf("%w: give -p or --binary, not both", errUsage)
	case c.pid != 0:
		return target.FromPID("", c.pid)
	case c.binary != "":
		return target.FromBinary(c.binary)
	}
	return nil, fmt.Errorf("%w: give -p PID or --binary PATH", errUsage)
}

// parse lets flags and positional arguments come in any order.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// openTarget parses a command's flags, then opens the binary it names.
func openTarget(name string, args []string) (*target.Target, *symbols.Binary, []string, error) {
	var c common
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, nil, nil, err
	}
	t, err := c.target()
	if err != nil {
		return nil, nil, nil, err
	}
	bin, err := symbols.Open(t.Path, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return t, bin, pos, nil
}

func cmdFuncs(args []string, stdout io.Writer) error {
	t, bin, pos, err := openTarget("funcs", args)
	if err != nil {
		return err
	}
	defer bin.Close()
	pattern := strings.Join(pos, " ")
	fns, err := bin.Functions(pattern)
	if err != nil {
		return err
	}
	if !bin.HasDWARF() {
		fmt.Fprintf(stdout, "# %s: %v; %s\n", t.Display, symbols.ErrNoDebugInfo, symbols.NoDebugInfoHint)
	} else {
		fmt.Fprintf(stdout, "# %s: debug info %s\n", t.Display, bin.DebugSource)
	}
	for _, fn := range fns {
		if !bin.HasDWARF() && !fn.Exported {
			continue
		}
		fmt.Fprintf(stdout, "%s\t%s\t%#x\t", fn.Name, fn.Symbol, fn.Address)
		params, err := bin.Params(fn)
		if err != nil {
			fmt.Fprintf(stdout, "(%v)\n", firstLine(err))
			continue
		}
		var ps []string
		for _, p := range params {
			if p.Err != nil {
				ps = append(ps, fmt.Sprintf("%s %s@<unavailable>", symbols.TypeName(p.Type), p.Name))
				continue
			}
			ps = append(ps, fmt.Sprintf("%s %s@%s", symbols.TypeName(p.Type), p.Name, p.Location))
		}
		fmt.Fprintf(stdout, "(%s)\n", strings.Join(ps, ", "))
	}
	return nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func cmdFields(args []string, stdout io.Writer) error {
	_, bin, pos, err := openTarget("fields", args)
	if err != nil {
		return err
	}
	defer bin.Close()
	if len(pos) == 0 {
		return fmt.Errorf("%w: fields needs a TYPE, e.g. ngx_connection_t", errUsage)
	}
	typ, err := bin.Type(strings.Join(pos, " "))
	if err != nil {
		return err
	}
	text, err := symbols.Layout(typ)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, text)
	return err
}

type probeFlags []string

func (p *probeFlags) String() string     { return strings.Join(*p, " ") }
func (p *probeFlags) Set(v string) error { *p = append(*p, v); return nil }

func cmdRun(args []string, stdout, stderr io.Writer) error {
	var c common
	var probeSpecs probeFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.register(fs)
	fs.Var(&probeSpecs, "probe", "probe `SPEC`: FUNCTION[%return][:EXPR,...] (repeatable)")
	format := fs.String("o", "text", "output format: text or json")
	duration := fs.Duration("duration", 0, "detach after this long (default: until Ctrl-C)")
	ringBytes := fs.Int("ringbuf", 4<<20, "ring buffer `BYTES` (a power of two)")
	withStacks := fs.Bool("stack", false, "add probes with stacks where nginx closes connections")
	stackBytes := fs.Int("stack-bytes", probes.DefaultStackBytes, "stack `BYTES` copied per hit (a multiple of 512)")
	inline := fs.String("e", "", "probe-set script `TEXT`")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	src, err := scriptSource(pos, *inline)
	if err != nil {
		return err
	}
	if src != nil && len(probeSpecs) > 0 {
		return fmt.Errorf("%w: give a script or --probe, not both", errUsage)
	}
	// Parse before anything else: a typo is reported the same with or without root.
	var parsed *script.Script
	if src != nil {
		if parsed, err = src.parse(); err != nil {
			return err
		}
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("%w: -o %q: want text or json", errUsage, *format)
	}
	t, bin, start, err := openTraced(c, true)
	if err != nil {
		return err
	}
	defer bin.Close()

	specs := probeset.Default()
	if len(probeSpecs) > 0 {
		specs = nil
		for _, text := range probeSpecs {
			s, err := probeset.ParseFlag(text)
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			specs = append(specs, s)
		}
	}
	if *withStacks {
		specs = append(specs, probeset.CloseStacks(bin)...)
	}
	if !bin.HasDWARF() && parsed == nil {
		for _, s := range specs {
			if len(s.Values) > 0 {
				return fmt.Errorf("%s: %w, so %s cannot read %s; %s", t.Display, symbols.ErrNoDebugInfo, s.Name(), s.Values[0].Expr, symbols.NoDebugInfoHint)
			}
		}
	}
	var resolved *probeset.Resolved
	var program *script.Program
	if parsed != nil {
		if program, err = script.Compile(bin, parsed); err != nil {
			return err
		}
		resolved = &probeset.Resolved{Probes: program.Probes, Specs: program.Specs}
	} else if resolved, err = probeset.Resolve(bin, specs); err != nil {
		return err
	}
	sess, err := probes.Attach(t.Path, resolved.Probes, probes.Options{PID: t.PID, Children: t.Master, RingBufferBytes: *ringBytes, StackBytes: *stackBytes})
	if err != nil {
		return err
	}
	defer sess.Close()
	printAttachSummary(stderr, t, bin, resolved, time.Since(start))
	unwinder := stacks.NewUnwinder("")
	defer unwinder.Close()
	if anyStack(resolved.Probes) {
		prepareStacks(unwinder, t, stderr)
	}

	specOf := map[*probes.Probe]*probeset.Spec{}
	for i, p := range resolved.Probes {
		specOf[p] = resolved.Specs[i]
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	buffered := bufio.NewWriterSize(stdout, 64<<10)
	defer buffered.Flush()
	printer := &output.Printer{W: buffered, JSON: *format == "json", Clock: output.NewClock(time.Duration(ts.Nano()))}

	delivered, err := consume(sess, *duration, unwinder, buffered, stderr, func(ev probes.Event, st *stacks.Stack) error {
		if program != nil {
			if w := program.Watch(ev.Probe); w != nil {
				return printer.PrintFlip(ev, w.Decode(ev), st)
			}
		}
		return printer.Print(ev, specOf[ev.Probe], st)
	})
	if err != nil {
		return err
	}
	counts := sess.Counts()
	if program != nil && len(program.Aggregations) > 0 {
		if err := output.PrintAggregates(stdout, *format == "json", program.Aggregations, sess.Aggregates()); err != nil {
			return err
		}
	}
	if err := sess.Close(); err != nil {
		fmt.Fprintf(stderr, "ngxprobe: close: %v\n", err)
	}
	printExitSummary(stderr, *format == "json", counts, delivered)
	return nil
}

// consume reads and prints events until Ctrl-C, SIGTERM or the duration,
// then detaches and drains. It returns the events delivered per probe.
func consume(sess *probes.Session, duration time.Duration, unwinder *stacks.Unwinder, buffered *bufio.Writer, stderr io.Writer, print func(probes.Event, *stacks.Stack) error) (map[*probes.Probe]uint64, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	delivered := map[*probes.Probe]uint64{}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	records := make(chan []byte, queueLen(sess.MaxRecordSize()))
	readDone := make(chan error, 1)
	go func() { readDone <- readRecords(ctx, sess, records, stderr) }()
	var printErr error
	for raw := range records {
		if printErr != nil {
			continue // drain, so that the reader can finish
		}
		ev, ok, err := sess.Decode(raw)
		if err != nil {
			printErr = err
			cancel()
			continue
		}
		if !ok {
			continue
		}
		delivered[ev.Probe]++
		var st *stacks.Stack
		if ev.Stack != nil {
			unwound := unwinder.Unwind(*ev.Stack)
			st = &unwound
		}
		printErr = print(ev, st)
		if printErr == nil && len(records) == 0 {
			printErr = buffered.Flush() // caught up: show what we have
		}
		if printErr != nil {
			cancel()
		}
	}
	if err := <-readDone; err != nil {
		return nil, err
	}
	if printErr != nil {
		return nil, printErr
	}
	return delivered, buffered.Flush()
}

// openTraced checks the privileges to attach (when attaching), then opens
// the target's binary. Privileges come first: without them /proc/PID/exe
// of another user's nginx is unreadable, and that error would hide the
// real cause.
func openTraced(c common, attach bool) (*target.Target, *symbols.Binary, time.Time, error) {
	if attach {
		if err := probes.CheckSupport(); err != nil {
			return nil, nil, time.Time{}, err
		}
	}
	t, err := c.target()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	start := time.Now()
	bin, err := symbols.Open(t.Path, nil)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return t, bin, start, nil
}

// prepareStacks indexes the workers' modules in the background, off the
// attach path, so that the first stack does not stall the reader and a
// worker that exits before its events are read still gets names. The
// indexing takes about a second of CPU; "stacks ready" says it is done.
func prepareStacks(u *stacks.Unwinder, t *target.Target, stderr io.Writer) {
	go func() {
		start := time.Now()
		for _, pid := range t.Workers {
			u.Prepare(pid)
		}
		fmt.Fprintf(stderr, "ngxprobe: stacks ready: modules of %d processes indexed in %d ms\n", len(t.Workers), time.Since(start).Milliseconds())
	}()
}

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

// readRecords moves records from the ring to out until ctx ends, then
// detaches and drains: every hit is then either delivered or counted lost.
func readRecords(ctx context.Context, sess *probes.Session, out chan<- []byte, stderr io.Writer) error {
	defer close(out)
	for ctx.Err() == nil {
		sess.SetDeadline(time.Now().Add(pollInterval))
		raw, err := sess.ReadRecord()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return err
		}
		out <- raw
	}
	if err := sess.Detach(); err != nil {
		fmt.Fprintf(stderr, "ngxprobe: detach: %v\n", err)
	}
	sess.SetDeadline(time.Now())
	for {
		raw, err := sess.ReadRecord()
		if err != nil {
			return nil
		}
		out <- raw
	}
}

func anyStack(ps []*probes.Probe) bool {
	for _, p := range ps {
		if p.Stack {
			return true
		}
	}
	return false
}

func printAttachSummary(w io.Writer, t *target.Target, bin *symbols.Binary, r *probeset.Resolved, took time.Duration) {
	who := "every process running it"
	switch {
	case t.Master:
		who = fmt.Sprintf("master %d and its workers %v (new workers included)", t.PID, t.Workers)
	case t.PID != 0:
		who = fmt.Sprintf("pid %d", t.PID)
	}
	debug := bin.DebugSource
	if debug == "" {
		debug = "none"
	}
	fmt.Fprintf(w, "ngxprobe: attached %d probes to %s (debug info: %s), tracing %s, in %d ms\n",
		len(r.Probes), t.Display, debug, who, took.Milliseconds())
	for _, p := range r.Probes {
		kind := "uprobe"
		if p.Return {
			kind = "uretprobe"
		}
		where := p.Function.Symbol
		if p.At != 0 {
			where = fmt.Sprintf("%s+%#x", where, p.At)
		}
		fmt.Fprintf(w, "  %-10s %-42s %s at %#x (file offset %#x), %d values\n", kind, p.Name, where, p.Function.Address+p.At, p.Function.Offset+p.At, len(p.Values))
	}
}

func printExitSummary(w io.Writer, asJSON bool, counts []probes.Counts, delivered map[*probes.Probe]uint64) {
	var hits, events, lost uint64
	for _, c := range counts {
		hits += c.Hits
		events += delivered[c.Probe]
		lost += c.Lost
	}
	if asJSON {
		type probeSummary struct {
			Probe    string `json:"probe"`
			Function string `json:"function"`
			Hits     uint64 `json:"hits"`
			Events   uint64 `json:"events"`
			Lost     uint64 `json:"lost"`
		}
		var summary struct {
			Summary struct {
				Hits   uint64         `json:"hits"`
				Events uint64         `json:"events"`
				Lost   uint64         `json:"lost"`
				Probes []probeSummary `json:"probes"`
			} `json:"summary"`
		}
		summary.Summary.Hits, summary.Summary.Events, summary.Summary.Lost = hits, events, lost
		for _, c := range counts {
			summary.Summary.Probes = append(summary.Summary.Probes, probeSummary{c.Probe.Name, c.Probe.Function.Symbol, c.Hits, delivered[c.Probe], c.Lost})
		}
		b, _ := json.Marshal(summary)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	fmt.Fprintf(w, "ngxprobe: detached; %d hits, %d events, %d lost\n", hits, events, lost)
	for _, c := range counts {
		fmt.Fprintf(w, "  %-42s %-44s hits %d, events %d, lost %d\n", c.Probe.Name, c.Probe.Function.Symbol, c.Hits, delivered[c.Probe], c.Lost)
	}
}

// scriptArg is a script named on the command line or given with -e.
type scriptArg struct {
	path, text string
}

func scriptSource(pos []string, inline string) (*scriptArg, error) {
	switch {
	case len(pos) > 1:
		return nil, fmt.Errorf("%w: one script at a time, got %q", errUsage, pos)
	case len(pos) == 1 && inline != "":
		return nil, fmt.Errorf("%w: give a script file or -e, not both", errUsage)
	case len(pos) == 1:
		return &scriptArg{path: pos[0]}, nil
	case inline != "":
		return &scriptArg{text: inline}, nil
	}
	return nil, nil
}

func (a *scriptArg) parse() (*script.Script, error) {
	if a.path != "" {
		return script.ParseFile(a.path, nil)
	}
	return script.ParseText("-e", a.text, nil)
}

// cmdCheck resolves a script against a binary and prints what run would
// attach. It needs no privileges.
func cmdCheck(args []string, stdout io.Writer) error {
	var c common
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	c.register(fs)
	inline := fs.String("e", "", "probe-set script `TEXT`")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	src, err := scriptSource(pos, *inline)
	if err != nil {
		return err
	}
	if src == nil {
		return fmt.Errorf("%w: check needs a SCRIPT or -e TEXT", errUsage)
	}
	parsed, err := src.parse()
	if err != nil {
		return err
	}
	t, err := c.target()
	if err != nil {
		return err
	}
	start := time.Now()
	bin, err := symbols.Open(t.Path, nil)
	if err != nil {
		return err
	}
	defer bin.Close()
	program, err := script.Compile(bin, parsed)
	if err != nil {
		return err
	}
	n := 0
	for _, pt := range program.Points {
		n += len(pt.Instances)
	}
	fmt.Fprintf(stdout, "%s: ok against %s (debug info: %s): %d probe points, %d attach points, %d aggregations, checked in %d ms\n",
		parsed.Files.Position(1).File, t.Display, bin.DebugSource, len(program.Points), n, len(program.Aggregations), time.Since(start).Milliseconds())
	for _, pt := range program.Points {
		fmt.Fprintf(stdout, "%s  %s\n", pt.Pos, pt.Text)
		for _, in := range pt.Instances {
			where := in.Symbol
			if in.Offset != 0 {
				where = fmt.Sprintf("%s+%#x", in.Symbol, in.Offset)
			}
			if in.Inlined != "" {
				where += " (inlined " + in.Inlined + ")"
			}
			fmt.Fprintf(stdout, "    %-9s %-48s addr %#x  file offset %#x\n", in.Kind, where, in.Address, in.FileOffset)
		}
	}
	return nil
}

var watchModes = map[string]watch.Mode{"exact": watch.Exact, "diff": watch.Diff, "both": watch.Both}

// cmdWatch reports flips of a connection's field: exact mode probes the
// instructions that write it, diff mode compares it between functions.
func cmdWatch(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	c.register(fs)
	mode := fs.String("mode", "exact", "exact, diff or both")
	explain := fs.Bool("explain", false, "list the write sites and probe points, attach nothing")
	noStack := fs.Bool("no-stack", false, "do not capture a stack per flip")
	allSites := fs.Bool("all-sites", false, "also probe wide stores not known to write the watched type")
	var at probeFlags
	fs.Var(&at, "at", "diff mode: compare at entry and return of `FUNC[:CONN]` instead of the default points (repeatable); CONN names the connection, c by default")
	format := fs.String("o", "text", "output format: text or json")
	duration := fs.Duration("duration", 0, "detach after this long (default: until Ctrl-C)")
	ringBytes := fs.Int("ringbuf", 4<<20, "ring buffer `BYTES` (a power of two)")
	stackBytes := fs.Int("stack-bytes", probes.DefaultStackBytes, "stack `BYTES` copied per flip (a multiple of 512)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: watch needs one EXPR, e.g. 'c->read->eof'", errUsage)
	}
	m, ok := watchModes[*mode]
	if !ok {
		return fmt.Errorf("%w: --mode %q: want exact, diff or both", errUsage, *mode)
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("%w: -o %q: want text or json", errUsage, *format)
	}
	if _, err := watch.ParseExpr(pos[0]); err != nil {
		return err
	}
	t, bin, start, err := openTraced(c, !*explain)
	if err != nil {
		return err
	}
	defer bin.Close()
	var points []watch.DiffPoint
	for _, a := range at {
		fn, key, _ := strings.Cut(a, ":")
		if key == "" {
			key = "c"
		}
		points = append(points, watch.DiffPoint{Function: fn, Key: key, Return: true})
	}
	plan, err := watch.Prepare(bin, pos[0], m, points, !*noStack, *allSites)
	if err != nil {
		return err
	}
	if *explain {
		return explainWatch(stdout, plan, time.Since(start))
	}
	sess, err := probes.Attach(t.Path, plan.Probes, probes.Options{PID: t.PID, Children: t.Master, RingBufferBytes: *ringBytes, StackBytes: *stackBytes})
	if err != nil {
		return err
	}
	defer sess.Close()
	probed := 0
	for _, ok := range plan.Probed {
		if ok {
			probed++
		}
	}
	fmt.Fprintf(stderr, "ngxprobe: attached watch %s (%s.%s, byte %d bit %d) to %s in %d ms: %d write sites probed of %d found, %d diff points\n",
		plan.Expr.Text, plan.Field.Type, plan.Field.Member, plan.Field.Offset, plan.Field.BitOffset, t.Display, time.Since(start).Milliseconds(), probed, len(plan.Sites), len(plan.Points))
	for _, n := range plan.Notes {
		fmt.Fprintf(stderr, "  note: %s\n", n)
	}
	unwinder := stacks.NewUnwinder("")
	defer unwinder.Close()
	if !*noStack {
		prepareStacks(unwinder, t, stderr)
	}
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	buffered := bufio.NewWriterSize(stdout, 64<<10)
	defer buffered.Flush()
	printer := &output.Printer{W: buffered, JSON: *format == "json", Clock: output.NewClock(time.Duration(ts.Nano()))}
	delivered, err := consume(sess, *duration, unwinder, buffered, stderr, func(ev probes.Event, st *stacks.Stack) error {
		return printer.PrintFlip(ev, plan.Decode(ev), st)
	})
	if err != nil {
		return err
	}
	counts := sess.Counts()
	printHotSites(stderr, plan, sess.WatchHits())
	if err := sess.Close(); err != nil {
		fmt.Fprintf(stderr, "ngxprobe: close: %v\n", err)
	}
	printExitSummary(stderr, *format == "json", counts, delivered)
	return nil
}

// printHotSites names the write sites that trapped most: each hit costs
// a trap whether or not the field flips, so these are the watch's cost.
func printHotSites(w io.Writer, plan *watch.Plan, hits []uint64) {
	type hot struct {
		site watch.Site
		n    uint64
	}
	var hs []hot
	var total uint64
	for cookie, n := range hits {
		if i := plan.SiteOf(cookie); i >= 0 && n > 0 {
			hs = append(hs, hot{plan.Sites[i], n})
			total += n
		}
	}
	if len(hs) == 0 {
		return
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].n > hs[j].n })
	fmt.Fprintf(w, "ngxprobe: %d write-site hits; the busiest sites:\n", total)
	for _, h := range hs[:min(len(hs), 8)] {
		fmt.Fprintf(w, "  %8d  %s\n", h.n, h.site)
	}
}

func explainWatch(w io.Writer, plan *watch.Plan, took time.Duration) error {
	probed := 0
	for _, ok := range plan.Probed {
		if ok {
			probed++
		}
	}
	fmt.Fprintf(w, "watch %s: %s.%s at byte %d, bit %d, %d bits; %d write sites, %d probed (resolved in %d ms)\n",
		plan.Expr.Text, plan.Field.Type, plan.Field.Member, plan.Field.Offset, plan.Field.BitOffset, plan.Field.BitSize, len(plan.Sites), probed, took.Milliseconds())
	for i, s := range plan.Sites {
		how := "probed: new value computed from the instruction"
		switch {
		case !plan.Probed[i]:
			how = "NOT probed: " + plan.Skipped[i]
		case !s.Effect.Valid:
			how = fmt.Sprintf("probed before and after (effect not modelled: %s)", s.Reason)
		}
		fmt.Fprintf(w, "  %s\n      %s\n", s, how)
	}
	if len(plan.Points) > 0 {
		fmt.Fprintf(w, "diff points: %s\n", strings.Join(plan.Points, ", "))
	}
	for _, n := range plan.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return nil
}
