package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ngxprobe/ngxprobe/debuginfod"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// debugOptions says where symbols looks for separate debug info: the
// --debug-dir directories, and debuginfod unless --offline.
func (c *targetFlags) debugOptions(ctx context.Context) (*symbols.OpenOptions, error) {
	opts := &symbols.OpenOptions{DebugDirs: c.debugDirs}
	c.limits.apply(opts)
	if c.offline {
		opts.NoFetch = "--offline"
		return opts, nil
	}
	fetch, err := newFetcher(ctx, c.diag(), &c.limits)
	if err != nil {
		return nil, err
	}
	opts.Fetch = fetch
	if fetch == nil {
		opts.NoFetch = "DEBUGINFOD_URLS is not set"
	}
	return opts, nil
}

// diag is where progress goes: stderr.
func (c *targetFlags) diag() io.Writer {
	if c.stderr != nil {
		return c.stderr
	}
	return os.Stderr
}

// openImage opens the target's executable; the modules it maps are
// opened when a probe or a lookup needs them (symbols.Image), and one that
// cannot be opened then is left out, with a note in the attach summary.
// Modules named with --module are opened now: a wrong path is an error.
func openImage(t *target.Target, opts *symbols.OpenOptions) (*symbols.Image, error) {
	main, err := symbols.Open(t.Path, opts)
	if err != nil {
		return nil, err
	}
	if t.Display != t.Path {
		main.MappedPath = t.Display
	}
	img := symbols.NewImage(main)
	var files []symbols.ModuleFile
	for _, m := range t.Modules {
		files = append(files, symbols.ModuleFile{Path: m.Path, MappedPath: m.MappedPath})
	}
	img.Defer(files, func(f symbols.ModuleFile) (*symbols.Binary, error) { return symbols.Open(f.Path, opts) })
	if t.PID == 0 {
		img.Modules()
		if errs := img.Failed(); len(errs) > 0 {
			img.Close()
			return nil, errors.Join(errs...)
		}
	}
	return img, nil
}

// debugSources is the sources table: where each module's debug info came
// from. Where there is none, full lists where it was looked for, and
// short only counts the places (ngxprobe funcs lists them).
func debugSources(img *symbols.Image, full bool) []string {
	var out []string
	for _, b := range img.Opened() {
		out = append(out, fmt.Sprintf("%s (%s): %s", symbols.ModuleName(b), b.Kind, debugSource(b, full)))
	}
	for _, err := range img.Failed() {
		out = append(out, fmt.Sprintf("%s; its functions are not probed and its frames are not named", limitNames.Replace(err.Error())))
	}
	if n := len(img.Unopened()); n > 0 {
		out = append(out, fmt.Sprintf("and %d more modules, not read: no probe is in them", n))
	}
	return out
}

func debugSource(b *symbols.Binary, full bool) string {
	if b.DebugSource != "" {
		return b.DebugSource
	}
	src := "none"
	switch {
	case len(b.DebugSearched) == 0:
	case full:
		src += ", searched " + strings.Join(b.DebugSearched, ", ")
	default:
		src += fmt.Sprintf(", %d places searched (ngxprobe funcs lists them)", len(b.DebugSearched))
	}
	if b.FetchErr != nil {
		src += "; debuginfod: " + b.FetchErr.Error()
	}
	return src
}

// newFetcher returns a debuginfod fetch for symbols.OpenOptions, or nil
// when DEBUGINFOD_URLS names no server. It fetches debug info for nginx
// and its dynamic modules only: libraries' debug info is large (libcrypto's
// is over 10 MiB) and rarely what a close is about; install their dbgsym
// packages or pass --debug-dir to get it.
func newFetcher(ctx context.Context, progress io.Writer, limits *limitFlags) (func(symbols.FetchRequest) (string, error), error) {
	client, err := debuginfod.FromEnv()
	if err != nil {
		return nil, err
	}
	limits.fetcher(client)
	if !client.Enabled() {
		return nil, nil
	}
	client.Progress = progress
	return func(req symbols.FetchRequest) (string, error) {
		if req.Kind == symbols.Other {
			return "", errLibraryNotFetched
		}
		return client.Fetch(ctx, debuginfod.Request{BuildID: req.BuildID, Type: debuginfod.TypeDebuginfo, Name: req.Path})
	}, nil
}

// errLibraryNotFetched: debuginfod is asked for nginx and its modules only.
var errLibraryNotFetched = errors.New("not asked for a library (ngxprobe fetches nginx and its modules)")
