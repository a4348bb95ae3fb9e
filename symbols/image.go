package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Image is the code of an nginx process: the executable and the shared
// objects it maps, its dynamic modules (ngx_stream_module.so) and
// libraries (libc.so.6, libssl.so.3). Functions, types and lines resolve
// across every module; a name qualified by a module, as bpftrace's
// uprobe:PATH:FUNC, picks one: ngx_stream_module.so:ngx_stream_proxy_handler
// or libc.so.6:close.
//
// Modules are opened when a question needs them, not before: a name found
// in the executable reads no library, so a probe set on nginx's own
// functions costs no more to attach than it did with one binary. A
// question the executable cannot answer opens them all.
type Image struct {
	main *Binary

	mu sync.Mutex
	// opened are the modules read so far, nginx's modules before the
	// libraries: the order names are looked up in.
	opened  []*Binary
	pending []ModuleFile
	open    func(ModuleFile) (*Binary, error)
	// failed are the modules that could not be opened.
	failed []error
}

// ModuleFile is a module an image opens when it needs it.
type ModuleFile struct {
	// Path opens it; MappedPath is its path in the traced process.
	Path, MappedPath string
}

// NewImage makes an image of the executable and modules already open.
// The image owns them: Close closes them all.
func NewImage(main *Binary, modules ...*Binary) *Image {
	im := &Image{main: main}
	im.add(modules...)
	return im
}

// Defer adds modules that open opens when a question needs them; a module
// that fails to open is left out, and Failed says why.
func (im *Image) Defer(files []ModuleFile, open func(ModuleFile) (*Binary, error)) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.pending = append(im.pending, files...)
	im.open = open
}

func (im *Image) add(modules ...*Binary) {
	im.opened = append(im.opened, modules...)
	sort.SliceStable(im.opened, func(i, j int) bool { return rank(im.opened[i]) < rank(im.opened[j]) })
}

func rank(b *Binary) int {
	switch b.Kind {
	case Nginx:
		return 0
	case NginxModule:
		return 1
	}
	return 2
}

// openAll opens every pending module.
func (im *Image) openAll() {
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, f := range im.pending {
		im.openFile(f)
	}
	im.pending = nil
}

// openFile opens one pending module; the caller holds im.mu.
func (im *Image) openFile(f ModuleFile) *Binary {
	b, err := im.open(f)
	if err != nil {
		im.failed = append(im.failed, fmt.Errorf("module %s: %w", f.MappedPath, err))
		return nil
	}
	b.MappedPath = f.MappedPath
	im.add(b)
	return b
}

// Main is the executable.
func (im *Image) Main() *Binary { return im.main }

// Modules returns the executable and every module, opening those not
// open yet: nginx's modules before the libraries.
func (im *Image) Modules() []*Binary {
	im.openAll()
	return im.Opened()
}

// Opened returns the executable and the modules opened so far.
func (im *Image) Opened() []*Binary {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]*Binary{im.main}, im.opened...)
}

// Unopened lists the modules no question has needed yet.
func (im *Image) Unopened() []ModuleFile {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]ModuleFile(nil), im.pending...)
}

// Failed says which modules could not be opened, and why.
func (im *Image) Failed() []error {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]error(nil), im.failed...)
}

// Close closes every module opened.
func (im *Image) Close() error {
	var errs []error
	for _, b := range im.Opened() {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// ModuleName is how a module is named in qualified names and output: its
// file name, ngx_stream_module.so or libc.so.6; the executable's is its
// file name too (nginx), through /proc/PID/exe included.
func ModuleName(b *Binary) string {
	if b.MappedPath != "" {
		return filepath.Base(b.MappedPath)
	}
	return filepath.Base(b.Path)
}

// moduleQualifier matches what can come before ":" to name a module: a
// path, or a file name that ends in .so with an optional version.
var moduleQualifier = regexp.MustCompile(`^(/.*|[A-Za-z0-9_.+-]+\.so(\.[0-9]+)*)$`)

// SplitQualified splits MODULE:FUNCTION. A name without a module
// qualifier comes back whole, with module "".
func SplitQualified(name string) (module, function string) {
	if m, f, ok := strings.Cut(name, ":"); ok && moduleQualifier.MatchString(m) && f != "" {
		return m, f
	}
	return "", name
}

// Module finds a module by path, by file name, or by the executable's
// file name; it opens only that module.
func (im *Image) Module(name string) (*Binary, error) {
	matches := func(path, mapped string) bool {
		return path == name || mapped == name || filepath.Base(mapped) == name || mapped == "" && filepath.Base(path) == name
	}
	var names []string
	for _, b := range im.Opened() {
		if matches(b.Path, b.MappedPath) {
			return b, nil
		}
		names = append(names, ModuleName(b))
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	for i, f := range im.pending {
		if matches(f.Path, f.MappedPath) {
			im.pending = append(im.pending[:i:i], im.pending[i+1:]...)
			if b := im.openFile(f); b != nil {
				return b, nil
			}
			return nil, im.failed[len(im.failed)-1]
		}
		names = append(names, filepath.Base(f.MappedPath))
	}
	return nil, &NotFoundError{Kind: ErrModuleNotFound, Name: name, Where: "the modules of " + ModuleName(im.main), Closest: Closest(name, names, 3)}
}

// Lookup returns every instance of the C function name in the module
// that qualifies it; else in the executable, or, when it has none, in
// every module.
func (im *Image) Lookup(name string) ([]*Function, error) {
	mod, fn := SplitQualified(name)
	if mod != "" {
		b, err := im.Module(mod)
		if err != nil {
			return nil, err
		}
		return b.Lookup(fn)
	}
	fs, first := im.main.Lookup(name)
	if first == nil {
		return fs, nil
	}
	var out []*Function
	for _, b := range im.Modules()[1:] {
		if fs, err := b.Lookup(name); err == nil {
			out = append(out, fs...)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, im.notFound(name, first)
}

// notFound suggests the closest names of nginx and its modules (not of
// libc's thousands).
func (im *Image) notFound(name string, err error) error {
	var nf *NotFoundError
	mods := im.Modules()
	if !errors.As(err, &nf) || len(mods) == 1 {
		return err
	}
	var names []string
	for _, b := range mods {
		if b.Kind == Other {
			continue
		}
		if ix, err := b.idx(); err == nil {
			for n := range ix.funcs {
				names = append(names, n)
			}
		}
	}
	out := *nf
	out.Where = fmt.Sprintf("%s or its %d modules", ModuleName(im.main), len(mods)-1)
	out.Closest = Closest(name, names, 5)
	return &out
}

// HasFunction reports whether a module has an instance of the function,
// as Lookup finds them.
func (im *Image) HasFunction(name string) bool {
	fs, err := im.Lookup(name)
	return err == nil && len(fs) > 0
}

// Functions returns the instances whose C names contain pattern, module
// by module, or in one module for MODULE:PATTERN.
func (im *Image) Functions(pattern string) ([]*Function, error) {
	var mods []*Binary
	if mod, rest := SplitQualified(pattern); mod != "" {
		b, err := im.Module(mod)
		if err != nil {
			return nil, err
		}
		mods, pattern = []*Binary{b}, rest
	} else {
		mods = im.Modules()
	}
	var out []*Function
	for _, b := range mods {
		fs, err := b.Functions(pattern)
		if err != nil {
			return nil, err
		}
		out = append(out, fs...)
	}
	return out, nil
}

// Type finds a type in the first module, in lookup order, that defines
// it: ngx_stream_session_t is in ngx_stream_module.so.
func (im *Image) Type(name string) (dwarf.Type, *Binary, error) {
	t, first := im.main.Type(name)
	if first == nil {
		return t, im.main, nil
	}
	for _, b := range im.Modules()[1:] {
		if !b.HasDWARF() {
			continue
		}
		t, err := b.Type(name)
		if err == nil {
			return t, b, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, nil, first
}

// LineSites returns the sites of FILE:LINE in every module whose line
// tables have the file.
func (im *Image) LineSites(file string, line int) ([]LineSite, error) {
	ls, best := im.main.LineSites(file, line)
	if best == nil || !errors.Is(best, ErrFileNotFound) && !errors.Is(best, ErrNoDebugInfo) {
		return ls, best // the executable has the file
	}
	var out []LineSite
	for _, b := range im.Modules()[1:] {
		if !b.HasDWARF() {
			continue
		}
		ls, err := b.LineSites(file, line)
		switch {
		case err == nil:
			out = append(out, ls...)
		case best == nil || errors.Is(best, ErrFileNotFound) && !errors.Is(err, ErrFileNotFound):
			// A module that has the file explains a line without code
			// better than one that does not have the file.
			best = err
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, best
}

// InlineSites lists where the C function was inlined, in every nginx
// module.
func (im *Image) InlineSites(name string) []InlineSite {
	var out []InlineSite
	for _, b := range im.Modules() {
		if b.Kind != Other {
			out = append(out, b.InlineSites(name)...)
		}
	}
	return out
}
