package main

import (
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// synopses are the commands' first usage lines, for --help and the
// top-level usage.
var synopses = map[string][]string{
	"run": {
		"[-p PID | --binary PATH | --all-nginx] [--probe SPEC]... [--stack] [-o text|json|otlp] [--duration D]",
		"[-p PID | --binary PATH | --all-nginx] [-o text|json|otlp] [--duration D] SCRIPT | -e 'TEXT'",
	},
	"closes":     {"[-p PID | --binary PATH | --all-nginx] [--stack] [--all] [--interval D] [-o text|json|otlp] [--duration D]"},
	"check":      {"[-p PID | --binary PATH] SCRIPT | -e 'TEXT'"},
	"watch":      {"[-p PID | --binary PATH | --all-nginx] [--mode exact|diff|both] [--explain] [-o text|json|otlp] [--duration D] EXPR"},
	"funcs":      {"[-p PID | --binary PATH] [PATTERN | MODULE:PATTERN]"},
	"fields":     {"[-p PID | --binary PATH] TYPE"},
	"features":   {""},
	"version":    {""},
	"completion": {"bash|zsh"},
}

// summaries say in one line what each command does.
var summaries = map[string]string{
	"run":        "attach a probe set (the default set, --probe flags, or a script) and print its events",
	"closes":     "explain every abnormal close of a connection in one verdict: who ended it, how, and the code that decided",
	"check":      "resolve a probe set against the binary's DWARF, attach nothing (no root needed)",
	"watch":      "report where a field of a connection flips, e.g. c->read->eof, with the line and a stack",
	"funcs":      "list function instances, their modules, addresses and parameter locations",
	"fields":     "print a type's layout with byte and bit offsets, like pahole",
	"features":   "report what the kernel offers, and what degrades without it",
	"version":    "print ngxprobe's version",
	"completion": "print a shell completion script: eval \"$(ngxprobe completion bash)\"",
}

// commandOrder is the order of the top-level usage.
var commandOrder = []string{"run", "closes", "check", "watch", "funcs", "fields", "features", "version", "completion"}

// helpError asks main to print a command's help and exit 0.
type helpError struct {
	name string
	fs   *flag.FlagSet
}

func (h *helpError) Error() string { return "help requested" }

// writeHelp prints a command's synopsis, what it does, and one line per
// flag.
func writeHelp(w io.Writer, name string, fs *flag.FlagSet) {
	for i, s := range synopses[name] {
		lead := "usage:"
		if i > 0 {
			lead = "      "
		}
		fmt.Fprintf(w, "%s ngxprobe %s %s\n", lead, name, s)
	}
	fmt.Fprintf(w, "\n%s.\n", strings.ToUpper(summaries[name][:1])+summaries[name][1:])
	if fs == nil {
		return
	}
	var lines [][2]string
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		left := "-" + f.Name
		if len(f.Name) > 1 {
			left = "--" + f.Name
		}
		if arg != "" {
			left += " " + arg
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" && f.DefValue != "0s" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		lines = append(lines, [2]string{left, usage})
		width = max(width, len(left))
	})
	if len(lines) > 0 {
		fmt.Fprintln(w, "\nflags:")
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %-*s  %s\n", width, l[0], l[1])
	}
}

// usageText is the top-level usage: every command's synopsis.
func usageText() string {
	var b strings.Builder
	b.WriteString("usage:\n")
	for _, name := range commandOrder {
		for _, s := range synopses[name] {
			fmt.Fprintf(&b, "  ngxprobe %-10s %s\n", name, s)
		}
	}
	b.WriteString("\n")
	for _, name := range commandOrder {
		fmt.Fprintf(&b, "  %-10s %s\n", name, summaries[name])
	}
	b.WriteString(`
-p PID takes an nginx master (its workers are traced, also after a reload)
or one worker; the dynamic modules and libraries it maps are searched too,
and MODULE:FUNCTION picks one (libc.so.6:close). --binary traces every
process running that executable; --module PATH adds a module to it.
SPEC is FUNCTION[%return][:EXPR,EXPR...], the script 'FUNCTION { print(EXPR, ...) }'.
Debug info comes from the binary, its .gnu_debuglink file, /usr/lib/debug
(and --debug-dir), then debuginfod (DEBUGINFOD_URLS; --offline turns it off).

"ngxprobe COMMAND --help" lists a command's flags.
`)
	return b.String()
}

// version is the module's version and the commit it was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "ngxprobe (no build information)"
	}
	v := info.Main.Version
	var rev, modified, when string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			when = s.Value
		}
	}
	out := "ngxprobe " + v
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " commit " + rev
		if modified == "true" {
			out += " (modified)"
		}
		if when != "" {
			out += " " + when
		}
	}
	return out + ", " + info.GoVersion
}
