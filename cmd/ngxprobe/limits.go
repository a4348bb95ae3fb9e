package main

import (
	"flag"
	"strings"

	"github.com/ngxprobe/ngxprobe/debuginfod"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// limitFlags raise (or lower) the bounds on what a binary, a process or a
// debuginfod server can make ngxprobe read: a tenant controls all three.
// Zero keeps each package's default.
type limitFlags struct {
	debugInfo, download     int64
	units, lineRows         int
	modules, mappings       int
	stackBytes, stackFrames int
}

func (l *limitFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&l.debugInfo, "max-debug-info", 0, "most `BYTES` of DWARF read from one file (default 256 MiB)")
	fs.IntVar(&l.units, "max-units", 0, "most compile `UNITS` indexed in one file (default 65536)")
	fs.IntVar(&l.lineRows, "max-line-rows", 0, "most line-table `ROWS` decoded per compile unit (default 1048576)")
	fs.IntVar(&l.modules, "max-modules", 0, "most `FILES` a process may map as code (default 256)")
	fs.IntVar(&l.mappings, "max-mappings", 0, "most `LINES` of /proc/PID/maps read (default 65536)")
	fs.IntVar(&l.stackBytes, "max-stack-decode", 0, "most `BYTES` of a stack copy unwound (default 262144)")
	fs.IntVar(&l.stackFrames, "max-frames", 0, "most `FRAMES` a stack is unwound to (default 128)")
	fs.Int64Var(&l.download, "max-download", 0, "largest debug file fetched from debuginfod, in `BYTES` (default 256 MiB, or DEBUGINFOD_MAXSIZE)")
}

// apply sets the bounds of reading debug info.
func (l *limitFlags) apply(opts *symbols.OpenOptions) {
	opts.MaxDebugInfo, opts.MaxUnits, opts.MaxLineRows = l.debugInfo, l.units, l.lineRows
}

// applyTarget sets the bounds of reading a process, before it is read.
func (l *limitFlags) applyTarget() {
	target.MaxModules, target.MaxMappings = l.modules, l.mappings
}

// unwinder sets an unwinder's bounds.
func (l *limitFlags) unwinder(u *stacks.Unwinder) {
	u.MaxModules, u.MaxMappings, u.MaxStackBytes, u.MaxFrames = l.modules, l.mappings, l.stackBytes, l.stackFrames
}

// fetcher sets a debuginfod client's bound.
func (l *limitFlags) fetcher(c *debuginfod.Client) {
	if l.download > 0 {
		c.MaxSize = l.download
	}
}

// limitNames turns the settings a limit error names into the flags that
// raise them: the packages name their fields, the user has flags.
var limitNames = strings.NewReplacer(
	"symbols.OpenOptions.MaxDebugInfo", "--max-debug-info",
	"symbols.OpenOptions.MaxUnits", "--max-units",
	"symbols.OpenOptions.MaxLineRows", "--max-line-rows",
	"stacks.Unwinder.MaxMappings, target.MaxMappings", "--max-mappings",
	"stacks.Unwinder.MaxModules", "--max-modules",
	"target.MaxModules", "--max-modules",
	"stacks.Unwinder.MaxStackBytes", "--max-stack-decode",
	"stacks.Unwinder.MaxFrames; raise it to unwind deeper", "--max-frames raises it",
	"stacks.Unwinder.MaxFrames", "--max-frames",
	"debuginfod.Client.MaxSize, DEBUGINFOD_MAXSIZE", "--max-download or DEBUGINFOD_MAXSIZE",
)
