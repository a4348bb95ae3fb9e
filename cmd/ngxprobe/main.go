// Command ngxprobe traces a live nginx with eBPF uprobes: which code closed
// a connection, and with which flags.
//
//	ngxprobe run -p PID                 default probe set on a master and its workers
//	ngxprobe run -p PID SCRIPT          a probe-set script (see examples/)
//	ngxprobe check --binary PATH SCRIPT resolve a script without attaching
//	ngxprobe watch -p PID c->read->eof  who flips a connection's field
//	ngxprobe run --binary PATH --probe 'ngx_unix_recv%return:$retval,c->number'
//	ngxprobe funcs --binary PATH [PATTERN]
//	ngxprobe fields --binary PATH TYPE
//
// Each subcommand has a file of its own: run.go, watch.go and inspect.go
// (funcs, fields, check). flags.go has the flags they share, and trace.go
// the tracer that run and watch drive.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage:
  ngxprobe run    [-p PID | --binary PATH] [--probe SPEC]... [--stack] [-o text|json] [--duration D]
  ngxprobe run    [-p PID | --binary PATH] [-o text|json] [--duration D] SCRIPT | -e 'TEXT'
  ngxprobe check  [-p PID | --binary PATH] SCRIPT | -e 'TEXT'
  ngxprobe watch  [-p PID | --binary PATH] [--mode exact|diff|both] [--explain] [-o text|json] [--duration D] EXPR
  ngxprobe funcs  [-p PID | --binary PATH] [PATTERN]
  ngxprobe fields [-p PID | --binary PATH] TYPE

-p PID takes an nginx master (its workers are traced, also after a reload)
or one worker; the dynamic modules and libraries it maps are searched too,
and MODULE:FUNCTION picks one (ngx_stream_module.so:ngx_stream_proxy_handler,
libc.so.6:close). --binary traces every process running that executable;
--module PATH adds a module or library to it. Debug info is read from the
binary, its .gnu_debuglink file, /usr/lib/debug/.build-id (and each
--debug-dir), then debuginfod (DEBUGINFOD_URLS; --offline turns it off).
SPEC is FUNCTION[%return][:EXPR,EXPR...], e.g. 'ngx_unix_recv%return:$retval,c->read->eof';
it stands for the script 'FUNCTION { print(EXPR, ...) }'.
A SCRIPT is a probe set: 'ngx_http_finalize_request /rc == 499/ { print(r->connection->number); stack }'.
watch reports where a field of a connection flips, e.g. 'c->read->eof', with
the writing line and a stack; --explain lists the write sites without attaching.
check parses and resolves a script against the binary's DWARF without root.
Without --probe or a script, run uses the default set: ngx_http_finalize_request,
ngx_unix_recv (at return) and ngx_http_ssl_handshake.
`

// errUsage marks errors caused by the command line (exit status 2).
var errUsage = errors.New("usage")

func main() {
	// Ctrl-C and SIGTERM end a trace cleanly: every command gets this
	// context, and the tracer detaches and drains when it ends.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
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
	case "funcs":
		return cmdFuncs(ctx, args, stdout, stderr)
	case "fields":
		return cmdFields(ctx, args, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}
