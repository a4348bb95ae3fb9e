package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// targetFlags choose what to trace and where its debug info is; every
// command takes them.
type targetFlags struct {
	pid       int
	binary    string
	modules   listFlag
	debugDirs listFlag
	offline   bool
	stderr    io.Writer
	// debug is where open looked for debug info, for the stack unwinder.
	debug *symbols.OpenOptions
	// limits bound what the target can make ngxprobe read (limits.go).
	limits limitFlags
}

func (c *targetFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&c.pid, "p", 0, "nginx master or worker `PID`")
	fs.StringVar(&c.binary, "binary", "", "nginx executable `PATH`")
	fs.Var(&c.modules, "module", "with --binary: a dynamic module or library `PATH` to resolve and probe functions in too (repeatable); with -p, every mapped module is")
	fs.Var(&c.debugDirs, "debug-dir", "also look for debug files under `DIR`/.build-id (repeatable)")
	fs.BoolVar(&c.offline, "offline", false, "do not fetch debug info with debuginfod (as an empty DEBUGINFOD_URLS)")
	c.limits.register(fs)
}

func (c *targetFlags) target() (*target.Target, error) {
	c.limits.applyTarget()
	switch {
	case c.pid != 0 && c.binary != "":
		return nil, fmt.Errorf("%w: give -p or --binary, not both", errUsage)
	case c.pid != 0 && len(c.modules) > 0:
		return nil, fmt.Errorf("%w: --module goes with --binary; with -p, the modules nginx maps are found in /proc/%d/maps", errUsage, c.pid)
	case c.pid != 0:
		return target.FromPID("", c.pid)
	case c.binary != "":
		return target.FromBinary(c.binary, c.modules)
	}
	return nil, fmt.Errorf("%w: give -p PID or --binary PATH", errUsage)
}

// open checks the privileges to attach (when attaching), then opens the
// target's executable and modules. Privileges come first: without them
// /proc/PID/exe of another user's nginx is unreadable, and that error
// would hide the real cause. It returns when opening started, for the
// attach time.
func (c *targetFlags) open(ctx context.Context, attach bool) (*target.Target, *symbols.Image, time.Time, error) {
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
	opts, err := c.debugOptions(ctx)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	c.debug = opts
	img, err := openImage(t, opts)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return t, img, start, nil
}

// traceFlags are the flags of the commands that attach and print: run
// and watch.
type traceFlags struct {
	targetFlags
	// watchAttach forces how a watch reaches its sites (watch --attach).
	watchAttach probes.WatchAttach
	format      string
	duration    time.Duration
	ringBytes   int
	stackBytes  int
	// redact masks secrets before anything is printed (converter).
	redact redactFlags
	// noLua: stacks show C frames only, with no Lua walk (OpenResty).
	noLua bool
	// allNginx follows every nginx master on the host (fleet.go).
	allNginx bool
	// otlp configures -o otlp (otlp.go).
	otlp otlpFlags
}

func (c *traceFlags) register(fs *flag.FlagSet) {
	c.targetFlags.register(fs)
	fs.StringVar(&c.format, "o", "text", "output format: "+strings.Join(output.Formats, ", ")+" or "+formatOTLP+" (to an OpenTelemetry Collector)")
	c.otlp.register(fs)
	fs.DurationVar(&c.duration, "duration", 0, "detach after this long (default: until Ctrl-C)")
	fs.IntVar(&c.ringBytes, "ringbuf", 4<<20, "ring buffer `BYTES` (a power of two)")
	fs.IntVar(&c.stackBytes, "stack-bytes", probes.DefaultStackBytes, "stack `BYTES` copied per hit (a multiple of 512)")
	fs.BoolVar(&c.allNginx, "all-nginx", false, "trace every nginx master on the host, in every container, as they start and stop (instead of -p or --binary)")
	fs.BoolVar(&c.noLua, "no-lua", false, "do not read Lua frames (OpenResty): stacks show C frames only, for a cheaper hit")
	fs.Var(redactSwitch{&c.redact, true}, "redact", "mask secrets before printing: query-string values, Cookie, Set-Cookie and Authorization headers, and --redact-field values")
	fs.Var(redactSwitch{&c.redact, false}, "no-redact", "print values unmasked, where redaction is the default (--all-nginx, -o otlp)")
	fs.Var(redactField{&c.redact}, "redact-field", "also mask every value whose name or expression matches `REGEXP` (repeatable; implies --redact)")
}

// check validates the flags that need no binary.
func (c *traceFlags) check() error {
	if _, err := output.New(c.format, io.Discard); err != nil && c.format != formatOTLP {
		return fmt.Errorf("%w: -o: %v", errUsage, err)
	}
	if c.format != formatOTLP && (c.otlp.endpoint != "" || c.otlp.protocol != "" || c.otlp.insecure) {
		return fmt.Errorf("%w: --otlp-* flags go with -o otlp", errUsage)
	}
	if c.allNginx && (c.pid != 0 || c.binary != "" || len(c.modules) > 0) {
		return fmt.Errorf("%w: --all-nginx finds every nginx itself: give it without -p, --binary or --module", errUsage)
	}
	// A fleet's events, and events shipped to a collector, are read by
	// people who did not ask for them: secrets are masked unless
	// --no-redact says otherwise.
	c.redact.byDefault = c.allNginx || c.format == "otlp"
	return nil
}

func (c *traceFlags) attachOptions(t *target.Target) probes.Options {
	return probes.Options{PID: t.PID, Children: t.Master, RingBufferBytes: c.ringBytes, StackBytes: c.stackBytes, WatchAttach: c.watchAttach}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (p *listFlag) String() string     { return strings.Join(*p, " ") }
func (p *listFlag) Set(v string) error { *p = append(*p, v); return nil }

// parse lets flags and positional arguments come in any order. -h and
// --help return a helpError: main prints the command's help.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return nil, &helpError{name: fs.Name(), fs: fs}
		} else if err != nil {
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

// scriptArg is a script named on the command line or given with -e.
type scriptArg struct {
	path, text string
}

// scriptFlags take a script as the one positional argument or with -e.
type scriptFlags struct {
	inline string
}

func (c *scriptFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.inline, "e", "", "probe-set script `TEXT`")
}

// parse parses the flags and returns the script they name, or nil.
func (c *scriptFlags) parse(fs *flag.FlagSet, args []string) (*scriptArg, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	switch {
	case len(pos) > 1:
		return nil, fmt.Errorf("%w: one script at a time, got %q", errUsage, pos)
	case len(pos) == 1 && c.inline != "":
		return nil, fmt.Errorf("%w: give a script file or -e, not both", errUsage)
	case len(pos) == 1:
		return &scriptArg{path: pos[0]}, nil
	case c.inline != "":
		return &scriptArg{text: c.inline}, nil
	}
	return nil, nil
}

func (a *scriptArg) parse() (*script.Script, error) {
	if a.path != "" {
		return script.ParseFile(a.path, nil)
	}
	return script.ParseText("-e", a.text, nil)
}
