package symbols

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
)

// OpenOptions tunes where Open looks for separate debug info.
type OpenOptions struct {
	// DebugRoot is the global debug directory; "/usr/lib/debug" when empty.
	DebugRoot string
	// DebugDirs are searched after DebugRoot for .build-id/xx/rest.debug
	// (ngxprobe's --debug-dir).
	DebugDirs []string
	// Fetch, when set, is asked last, after every local place, for the
	// debug file of a binary with a build-id: a debuginfod client. It
	// returns the path of a file it has checked to have that build-id.
	Fetch func(FetchRequest) (path string, err error)
	// NoFetch says why there is no Fetch (--offline, no DEBUGINFOD_URLS),
	// for DebugSearched.
	NoFetch string

	// Bounds on what a file may make Open and the lookups read (see
	// limits.go for the sizes of real files); zero means the default. A
	// file over one is a *LimitError that names the field.
	//
	// MaxDebugInfo is the most bytes of DWARF read: the .debug_*
	// sections, decompressed, of the debug file and of its dwz
	// supplementary file together; also the most any one compressed
	// section may decompress to. Default DefaultMaxDebugInfo (256 MiB).
	MaxDebugInfo int64
	// MaxUnits is the most units .debug_info may have (with those of a
	// dwz supplementary file): no lookup walks more. Default
	// DefaultMaxUnits (65,536).
	MaxUnits int
	// MaxLineRows is the most rows a lookup reads of one unit's line
	// table (LineSites, and the stack unwinder's lines). Default
	// DefaultMaxLineRows (1,048,576).
	MaxLineRows int
}

// FetchRequest asks OpenOptions.Fetch for a binary's debug file.
type FetchRequest struct {
	BuildID string
	// Path is the binary's path and Kind what it is, for a fetcher that
	// only fetches for nginx and its modules, and for its progress lines.
	Path string
	Kind Kind
}

// Kind says what a binary is to nginx, decided by its symbols, never by
// its file name: openresty, nginx-debug, Angie and Tengine are nginx too.
type Kind int

const (
	// Other is any other ELF file: libc, libssl, a non-nginx program.
	Other Kind = iota
	// Nginx is an nginx executable: it defines ngx_cycle.
	Nginx
	// NginxModule is a dynamic module that nginx loads with load_module:
	// it defines ngx_modules but not ngx_cycle.
	NginxModule
)

func (k Kind) String() string {
	switch k {
	case Nginx:
		return "nginx"
	case NginxModule:
		return "nginx module"
	}
	return "library"
}

// Binary is an ELF executable (or shared object) with its symbols and, when
// available, its DWARF. It is read once; lookups are served from indexes.
type Binary struct {
	Path string
	// MappedPath is the file's path as the traced process maps it, when
	// Path is another way to it (/proc/PID/exe, /proc/PID/root/...).
	MappedPath string
	BuildID    string
	// DebugSource says where DWARF came from: "embedded", "debuglink
	// <path>", "build-id <path>", "debuginfod <path>" (followed by
	// " + dwz <path>" for a dwz supplementary file, or a note on why it is
	// missing), or "" when there is none; DebugSearched then lists every place that was looked at, and
	// FetchErr why a fetch failed.
	DebugSource   string
	DebugSearched []string
	FetchErr      error
	PIE           bool
	Kind          Kind

	file      *elf.File
	debugFile *elf.File // nil when DWARF is embedded or absent
	dwarf     *dwarf.Data
	loads     []*elf.Prog
	sections  dwarfSections

	limits   limits
	versions unitVersionTable // read by checkDWARF, before the DWARF

	indexOnce sync.Once
	index     *index
	indexErr  error

	unitsOnce sync.Once
	units     *UnitIndex // built on first use, see unitIndex

	inlineOnce sync.Once
	inlines    *inlineTable // every inlined copy, read on first use (inlined.go)
}

type dwarfSections struct {
	loc, loclists, addr []byte
}

// Open reads the ELF file at path and locates its debug info.
func Open(path string, opts *OpenOptions) (*Binary, error) {
	if opts == nil {
		opts = &OpenOptions{}
	}
	root := opts.DebugRoot
	if root == "" {
		root = "/usr/lib/debug"
	}
	lim := limitsOf(opts)
	f, err := openELF(path, lim, true)
	if err != nil {
		return nil, err // names the path
	}
	b := &Binary{Path: path, file: f, PIE: f.Type == elf.ET_DYN, limits: lim}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			b.loads = append(b.loads, p)
		}
	}
	b.BuildID = buildID(f)
	b.Kind = KindOf(f)
	if err := b.findDebugInfo(root, opts); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close releases the files.
func (b *Binary) Close() error {
	if b.debugFile != nil {
		b.debugFile.Close()
	}
	return b.file.Close()
}

// HasDWARF reports whether types and parameters are available.
func (b *Binary) HasDWARF() bool { return b.dwarf != nil }

// DWARF returns the debug data, or nil.
func (b *Binary) DWARF() *dwarf.Data { return b.dwarf }

// ELF returns the executable's ELF file.
func (b *Binary) ELF() *elf.File { return b.file }

// FileOffset maps a virtual address to the file offset a uprobe needs.
func (b *Binary) FileOffset(vaddr uint64) (uint64, error) {
	for _, p := range b.loads {
		if vaddr >= p.Vaddr && vaddr < p.Vaddr+p.Filesz {
			return vaddr - p.Vaddr + p.Off, nil
		}
	}
	return 0, fmt.Errorf("%#x: %w", vaddr, ErrNotMapped)
}

// NoDebugInfoHint explains where debug info can come from.
const NoDebugInfoHint = "install the dbgsym package (debug info under /usr/lib/debug/.build-id), fetch it with debuginfod, or rebuild nginx with -g; exported functions can still be probed by name, without arguments or fields"

// findDebugInfo looks for DWARF where distributions put it, in the
// order gdb does: embedded; the .gnu_debuglink file beside the binary,
// in its .debug directory and under the debug root; the build-id path
// under the debug root and each debug directory; then a fetch.
func (b *Binary) findDebugInfo(root string, opts *OpenOptions) error {
	if f := b.file; f.Section(".debug_info") != nil {
		return b.useDWARF(f, "embedded", opts)
	}
	type candidate struct{ kind, path string }
	var candidates []candidate
	if name, crc, ok := debugLink(b.file); ok {
		real, err := filepath.EvalSymlinks(b.Path)
		if err != nil {
			real = b.Path
		}
		dir := filepath.Dir(real)
		for _, c := range []string{filepath.Join(dir, name), filepath.Join(dir, ".debug", name), filepath.Join(root, dir, name)} {
			if c == real {
				continue
			}
			b.DebugSearched = append(b.DebugSearched, c)
			if fileCRC(c) == crc {
				candidates = append(candidates, candidate{"debuglink", c})
			}
		}
	}
	if len(b.BuildID) > 2 {
		for _, dir := range append([]string{root}, opts.DebugDirs...) {
			c := filepath.Join(dir, ".build-id", b.BuildID[:2], b.BuildID[2:]+".debug")
			b.DebugSearched = append(b.DebugSearched, c)
			candidates = append(candidates, candidate{"build-id", c})
		}
	}
	for _, c := range candidates {
		if df := b.openDebugFile(c.path); df != nil {
			return b.useDWARF(df, c.kind+" "+c.path, opts)
		}
	}
	if opts.Fetch == nil || b.BuildID == "" {
		if opts.NoFetch != "" {
			b.DebugSearched = append(b.DebugSearched, "not debuginfod ("+opts.NoFetch+")")
		}
		return nil
	}
	b.DebugSearched = append(b.DebugSearched, "debuginfod")
	path, err := opts.Fetch(FetchRequest{BuildID: b.BuildID, Path: b.Path, Kind: b.Kind})
	if err != nil {
		b.FetchErr = err
		return nil
	}
	if df := b.openDebugFile(path); df != nil {
		return b.useDWARF(df, "debuginfod "+path, opts)
	}
	b.FetchErr = fmt.Errorf("%s: not a debug file for build-id %s", path, b.BuildID)
	return nil
}

// openDebugFile opens path if it is an ELF file with DWARF and, when both
// have one, the binary's build-id; the binary then owns it.
func (b *Binary) openDebugFile(path string) *elf.File {
	df, err := openELF(path, b.limits, false)
	if err != nil {
		return nil
	}
	if df.Section(".debug_info") == nil || (b.BuildID != "" && buildID(df) != "" && buildID(df) != b.BuildID) {
		df.Close()
		return nil
	}
	b.debugFile = df
	return df
}

// KindOf tells nginx, its modules and other ELF files apart by the
// symbols they define.
func KindOf(f *elf.File) Kind {
	defined := map[string]bool{}
	for _, get := range []func() ([]elf.Symbol, error){f.DynamicSymbols, f.Symbols} {
		syms, _ := get()
		for _, s := range syms {
			if s.Section != elf.SHN_UNDEF && (s.Name == "ngx_cycle" || s.Name == "ngx_modules") {
				defined[s.Name] = true
			}
		}
	}
	switch {
	case defined["ngx_cycle"]:
		return Nginx
	case defined["ngx_modules"]:
		return NginxModule
	}
	return Other
}

// useDWARF takes f's DWARF, merged with its dwz supplementary file when
// it names one (altlink.go); DebugSource then says where that came from,
// or why it is missing.
func (b *Binary) useDWARF(f *elf.File, source string, opts *OpenOptions) error {
	if err := b.checkDWARF(f, debugFilePath(b, source)); err != nil {
		return fmt.Errorf("%s: reading DWARF (%s): %w", b.Path, source, err)
	}
	d, note, err := b.readDWARF(f, source, opts)
	if err != nil {
		return fmt.Errorf("%s: reading DWARF (%s): %w", b.Path, source, err)
	}
	b.dwarf = d
	b.DebugSource = source + note
	for name, dst := range map[string]*[]byte{".debug_loc": &b.sections.loc, ".debug_loclists": &b.sections.loclists, ".debug_addr": &b.sections.addr} {
		if s := f.Section(name); s != nil {
			data, err := s.Data()
			if err != nil {
				return fmt.Errorf("%s: section %s: %w", b.Path, name, err)
			}
			*dst = data
		}
	}
	return nil
}

func buildID(f *elf.File) string {
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		return ""
	}
	data, err := s.Data()
	if err != nil || len(data) < 16 {
		return ""
	}
	nameSz := f.ByteOrder.Uint32(data[0:])
	descSz := f.ByteOrder.Uint32(data[4:])
	start := 12 + (nameSz+3)&^3
	if uint32(len(data)) < start+descSz {
		return ""
	}
	return hex.EncodeToString(data[start : start+descSz])
}

func debugLink(f *elf.File) (name string, crc uint32, ok bool) {
	s := f.Section(".gnu_debuglink")
	if s == nil {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	i := bytes.IndexByte(data, 0)
	if i <= 0 {
		return "", 0, false
	}
	off := (i + 4) &^ 3
	if len(data) < off+4 {
		return "", 0, false
	}
	return string(data[:i]), binary.LittleEndian.Uint32(data[off:]), true
}

func fileCRC(path string) uint32 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return crc32.ChecksumIEEE(data)
}

// FunctionSymbols returns function symbols from .symtab (of the binary, or
// of the debug file when the binary is stripped) and .dynsym.
func (b *Binary) FunctionSymbols() []elf.Symbol {
	var out []elf.Symbol
	syms, err := b.file.Symbols()
	if (err != nil || len(syms) == 0) && b.debugFile != nil {
		syms, err = b.debugFile.Symbols()
	}
	if err == nil {
		out = append(out, syms...)
	}
	if dyn, err := b.file.DynamicSymbols(); err == nil {
		out = append(out, dyn...)
	}
	var funcs []elf.Symbol
	for _, s := range out {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 && s.Section != elf.SHN_UNDEF {
			funcs = append(funcs, s)
		}
	}
	return funcs
}

var errIndex = errors.New("indexing binary")

// CompDir is the build directory of the binary's first compile unit
// (DW_AT_comp_dir): where relative source paths in its line tables
// start. "" without DWARF.
func (b *Binary) CompDir() string {
	if b.dwarf == nil {
		return ""
	}
	e, err := b.dwarf.Reader().Next()
	if err != nil || e == nil {
		return ""
	}
	dir, _ := e.Val(dwarf.AttrCompDir).(string)
	return dir
}
