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
	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// The commands in this file read the binary and attach nothing; they
// need no privileges.

// funcsFlags are funcs' flags.
type funcsFlags struct {
	targetFlags
	names bool
}

func (f *funcsFlags) register(fs *flag.FlagSet) {
	f.targetFlags.register(fs)
	fs.BoolVar(&f.names, "names", false, "print only the C names, one per line (for shell completion)")
}

// cmdFuncs lists the instances of the functions whose names match, with
// their addresses, parameter locations and modules. No match is an error
// that names the closest functions, as grep and bpftrace -l users expect.
func cmdFuncs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ff := funcsFlags{targetFlags: targetFlags{stderr: stderr}}
	fs := flag.NewFlagSet("funcs", flag.ContinueOnError)
	ff.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	_, img, _, err := ff.open(ctx, false)
	if err != nil {
		return err
	}
	defer img.Close()
	pattern := strings.Join(pos, " ")
	fns, err := img.Functions(pattern)
	if err != nil {
		return err
	}
	// The copies GCC inlined: an entry probe stops at them too.
	copies, err := img.InlinedFunctions(pattern)
	if err != nil {
		fmt.Fprintf(stderr, "ngxprobe: inlined copies may be missing: %v\n", err)
	}
	if len(fns) == 0 && len(copies) == 0 {
		return noMatch(img, pattern)
	}
	if ff.names {
		seen := map[string]bool{}
		for _, fn := range fns {
			if !seen[fn.Name] && (fn.Binary().HasDWARF() || fn.Exported) {
				seen[fn.Name] = true
				fmt.Fprintln(stdout, output.Escape(fn.Name))
			}
		}
		var inlinedOnly []string
		for _, in := range copies {
			if !seen[in.Name] {
				seen[in.Name] = true
				inlinedOnly = append(inlinedOnly, in.Name)
			}
		}
		sort.Strings(inlinedOnly)
		for _, n := range inlinedOnly {
			fmt.Fprintln(stdout, output.Escape(n))
		}
		return nil
	}
	main := img.Main()
	if main.Kind != symbols.Nginx {
		fmt.Fprintf(stdout, "# %s is not nginx: it defines no ngx_cycle; its functions are listed, but probe sets and watch expect nginx\n", moduleDisplay(main))
	}
	for _, b := range img.Modules() {
		fmt.Fprintf(stdout, "# %s (%s): debug info %s\n", output.Escape(moduleDisplay(b)), b.Kind, output.Escape(debugSource(b, true)))
		if !b.HasDWARF() && b.Kind != symbols.Other {
			fmt.Fprintf(stdout, "#   %v: %s\n", symbols.ErrNoDebugInfo, symbols.NoDebugInfoHint)
		}
	}
	for _, fn := range fns {
		b := fn.Binary()
		if !b.HasDWARF() && !fn.Exported {
			continue
		}
		fmt.Fprintf(stdout, "%s\t%s\t%#x\t", output.Escape(fn.Name), output.Escape(fn.Symbol), fn.Address)
		params, err := b.Params(fn)
		switch {
		case err != nil:
			fmt.Fprintf(stdout, "(%v)", firstLine(err))
		default:
			fmt.Fprintf(stdout, "(%s)", paramList(params))
		}
		fmt.Fprintf(stdout, "\t%s\n", output.Escape(symbols.ModuleName(b)))
	}
	// Inlined copies: NAME, where the copy starts (in the function that
	// holds it), its address, its arguments there, the module, and the
	// call that was inlined.
	for _, in := range copies {
		file := in.File
		if file == "" {
			file = "?"
		}
		split := ""
		if in.IsSplitPart() {
			split = " (a part GCC split off, run after the entry: not probed again)"
		}
		fmt.Fprintf(stdout, "%s\t%s+%#x\t%#x\t(%s)\t%s\tinlined into %s at %s:%d%s\n", output.Escape(in.Name), output.Escape(in.Function.Symbol), in.Offset, in.Address,
			paramList(in.Params), output.Escape(symbols.ModuleName(in.Function.Binary())), output.Escape(in.Caller), output.Escape(file), in.Line, split)
	}
	return nil
}

// paramList shows parameters as funcs prints them: type, name and
// location, or <unavailable>.
func paramList(params []symbols.Param) string {
	var ps []string
	for _, p := range params {
		if p.Err != nil {
			ps = append(ps, fmt.Sprintf("%s %s@<unavailable>", symbols.TypeName(p.Type), p.Name))
			continue
		}
		ps = append(ps, fmt.Sprintf("%s %s@%s", symbols.TypeName(p.Type), p.Name, p.Location))
	}
	return strings.Join(ps, ", ")
}

// errNoMatch: funcs found no function whose name holds the pattern.
var errNoMatch = errors.New("no function matches")

// noMatch explains an empty funcs: the closest names, and whether the
// binary is nginx at all.
func noMatch(img *symbols.Image, pattern string) error {
	msg := fmt.Sprintf("%q in %s", pattern, moduleDisplay(img.Main()))
	if img.Main().Kind != symbols.Nginx {
		msg += ", which is not nginx (it defines no ngx_cycle)"
	}
	_, fn := symbols.SplitQualified(pattern)
	if _, err := img.Lookup(fn); err != nil {
		var nf *symbols.NotFoundError
		if errors.As(err, &nf) && len(nf.Closest) > 0 {
			msg += "; did you mean " + strings.Join(nf.Closest, ", ") + "?"
		}
	}
	return fmt.Errorf("%w %s", errNoMatch, msg)
}

// openTargetImage parses a command's flags, then opens the executable and
// modules they name.
func openTargetImage(ctx context.Context, name string, args []string, stderr io.Writer) (img *symbols.Image, pos []string, err error) {
	flags := targetFlags{stderr: stderr}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.register(fs)
	if pos, err = parse(fs, args); err != nil {
		return nil, nil, err
	}
	_, img, _, err = flags.open(ctx, false)
	return img, pos, err
}

// moduleDisplay is a module's path as the process maps it.
func moduleDisplay(b *symbols.Binary) string {
	if b.MappedPath != "" {
		return b.MappedPath
	}
	return b.Path
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// cmdFields prints a type's layout with byte and bit offsets, like pahole.
func cmdFields(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	img, pos, err := openTargetImage(ctx, "fields", args, stderr)
	if err != nil {
		return err
	}
	defer img.Close()
	if len(pos) == 0 {
		return fmt.Errorf("%w: fields needs a TYPE, e.g. ngx_connection_t", errUsage)
	}
	typ, in, err := img.Type(strings.Join(pos, " "))
	if err != nil {
		return err
	}
	if in != img.Main() {
		fmt.Fprintf(stdout, "/* from %s */\n", moduleDisplay(in))
	}
	text, err := symbols.Layout(typ)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// cmdCheck resolves a script against a binary and prints what run would
// attach.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := targetFlags{stderr: stderr}
	var scriptFlag scriptFlags
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	flags.register(fs)
	scriptFlag.register(fs)
	src, err := scriptFlag.parse(fs, args)
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
	t, img, start, err := flags.open(ctx, false)
	if err != nil {
		return err
	}
	defer img.Close()
	program, err := script.Compile(img, parsed)
	if err != nil {
		return err
	}
	n := 0
	for _, pt := range program.Points {
		n += len(pt.Instances)
	}
	fmt.Fprintf(stdout, "%s: ok against %s (debug info: %s): %d probe points, %d attach points, %d aggregations, checked in %d ms\n",
		parsed.Files.Position(1).File, t.Display, orNone(img.Main().DebugSource), len(program.Points), n, len(program.Aggregations), time.Since(start).Milliseconds())
	for _, pt := range program.Points {
		fmt.Fprintf(stdout, "%s  %s\n", pt.Pos, pt.Text)
		for _, in := range pt.Instances {
			where := in.Symbol
			if in.Offset != 0 {
				where = fmt.Sprintf("%s+%#x", in.Symbol, in.Offset)
			}
			switch {
			case in.InlinedCopy:
				where += " (" + in.Inlined + ")"
			case in.Inlined != "":
				where += " (inlined " + in.Inlined + ")"
			}
			if in.Module != "" && in.Module != symbols.ModuleName(img.Main()) {
				where += " in " + in.Module
			}
			fmt.Fprintf(stdout, "    %-9s %-48s addr %#x  file offset %#x\n", in.Kind, output.Escape(where), in.Address, in.FileOffset)
			for _, n := range in.Notes {
				fmt.Fprintf(stdout, "      note: %s\n", output.Escape(n))
			}
		}
		for _, n := range pt.Notes {
			fmt.Fprintf(stdout, "    note: %s\n", output.Escape(n))
		}
	}
	return nil
}
