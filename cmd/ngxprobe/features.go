package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/ngxprobe/ngxprobe/probes"
)

// cmdFeatures reports what the kernel offers, and what ngxprobe does
// without what it lacks. It exits 1 when a required feature is missing.
func cmdFeatures(args []string, stdout io.Writer) error {
	pos, err := parse(flag.NewFlagSet("features", flag.ContinueOnError), args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: features takes no arguments", errUsage)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	fmt.Fprintf(stdout, "kernel %s\n", unix.ByteSliceToString(uts.Release[:]))
	missing := false
	for _, f := range probes.Report() {
		fmt.Fprintln(stdout, f)
		missing = missing || f.Required && !f.Have
	}
	if missing {
		return errors.New("a required kernel feature is missing")
	}
	return nil
}
