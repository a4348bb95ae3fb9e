// Command ngxprobe traces a live nginx with eBPF uprobes: which code closed
// a connection, and with which flags.
//
//	ngxprobe run -p PID                 default probe set on a master and its workers
//	ngxprobe run -p PID SCRIPT          a probe-set script (see examples/)
//	ngxprobe check --binary PATH SCRIPT resolve a script without attaching
//	ngxprobe watch -p PID c->read->eof  who flips a connection's field
//	ngxprobe closes -p PID              one verdict per abnormal close
//	ngxprobe run --binary PATH --probe 'ngx_unix_recv%return:$retval,c->number'
//	ngxprobe funcs --binary PATH [PATTERN]
//	ngxprobe fields --binary PATH TYPE
//
// Each subcommand has a file of its own: run.go, watch.go, closes.go and
// inspect.go (funcs, fields, check). flags.go has the flags they share,
// and trace.go the tracer that run, watch and closes drive.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// errUsage marks errors caused by the command line (exit status 2).
var errUsage = errors.New("usage")

func main() {
	// Ctrl-C and SIGTERM end a trace cleanly: every command gets this
	// context, and the tracer detaches and drains when it ends.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopProfile := startProfile(os.Getenv("NGXPROBE_CPUPROFILE"), os.Stderr)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	stop()
	os.Exit(code)
}

// startProfile writes a CPU profile of the whole run to path, when set
// (NGXPROBE_CPUPROFILE, for the pipeline benchmarks: go tool pprof reads
// it), and returns what stops it.
func startProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ngxprobe: NGXPROBE_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// execute runs a command line and returns its exit status: 0, 1 for a
// failure, 2 for a usage error (with the usage). Help goes to stdout.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	var help *helpError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		writeHelp(stdout, help.name, help.fs)
		return 0
	}
	fmt.Fprintf(stderr, "ngxprobe: %s\n", limitNames.Replace(err.Error()))
	if errors.Is(err, errUsage) {
		fmt.Fprint(stderr, "\n"+usageText())
		return 2
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, args, stdout, stderr)
	case "check":
		return cmdCheck(ctx, args, stdout, stderr)
	case "watch":
		return cmdWatch(ctx, args, stdout, stderr)
	case "closes":
		return cmdCloses(ctx, args, stdout, stderr)
	case "funcs":
		return cmdFuncs(ctx, args, stdout, stderr)
	case "fields":
		return cmdFields(ctx, args, stdout, stderr)
	case "features":
		return cmdFeatures(args, stdout)
	case "version":
		pos, err := parse(flag.NewFlagSet("version", flag.ContinueOnError), args)
		if err != nil {
			return err
		}
		if len(pos) > 0 {
			return fmt.Errorf("%w: version takes no arguments", errUsage)
		}
		_, err = fmt.Fprintln(stdout, version())
		return err
	case "completion":
		return cmdCompletion(args, stdout)
	case "help", "-h", "--help":
		if len(args) == 1 {
			if _, ok := summaries[args[0]]; ok {
				return run(ctx, []string{args[0], "--help"}, stdout, stderr)
			}
		}
		fmt.Fprint(stdout, usageText())
		return nil
	}
	return fmt.Errorf("%w: unknown command %q%s", errUsage, cmd, closestCommand(cmd))
}

// closestCommand suggests the command a typo meant.
func closestCommand(typo string) string {
	if c := symbols.Closest(typo, commandOrder, 1); len(c) > 0 {
		return "; did you mean " + c[0] + "?"
	}
	return ""
}
