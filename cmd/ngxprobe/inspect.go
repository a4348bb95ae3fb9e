package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ngxprobe/ngxprobe/script"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// The commands in this file read the binary and attach nothing; they
// need no privileges.

// openBinary parses a command's flags, then opens the binary it names.
func openBinary(name string, args []string) (bin *symbols.Binary, pos []string, display string, err error) {
	var flags targetFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	flags.register(fs)
	if pos, err = parse(fs, args); err != nil {
		return nil, nil, "", err
	}
	t, bin, _, err := flags.open(false)
	if err != nil {
		return nil, nil, "", err
	}
	return bin, pos, t.Display, nil
}

// cmdFuncs lists the instances of the functions whose names match, with
// their addresses and parameter locations.
func cmdFuncs(args []string, stdout io.Writer) error {
	bin, pos, display, err := openBinary("funcs", args)
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
		fmt.Fprintf(stdout, "# %s: %v; %s\n", display, symbols.ErrNoDebugInfo, symbols.NoDebugInfoHint)
	} else {
		fmt.Fprintf(stdout, "# %s: debug info %s\n", display, bin.DebugSource)
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

// cmdFields prints a type's layout with byte and bit offsets, like pahole.
func cmdFields(args []string, stdout io.Writer) error {
	bin, pos, _, err := openBinary("fields", args)
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

// cmdCheck resolves a script against a binary and prints what run would
// attach.
func cmdCheck(args []string, stdout io.Writer) error {
	var flags targetFlags
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
	t, bin, start, err := flags.open(false)
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
