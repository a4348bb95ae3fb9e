package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Resource bounds. ngxprobe runs as root and reads files that other people
// control: a tenant's module, a debug file from a debuginfod server. Each
// bound below keeps a crafted file from taking the host's memory or time;
// a file over one gets a *LimitError, which names the bound and how to
// raise it. The defaults are far above what real files need (measured on
// Debian bookworm, GCC 12):
//
//	file                                 DWARF        units  line rows, largest unit
//	test nginx, -O2 (embedded)           4.3 MiB       158     6,876
//	test nginx, -flto (embedded)         4.6 MiB       175    11,564
//	libc6-dbg's libc.so.6 debug file     9.5 MiB     2,063    14,011
//	Debian's nginx-dbgsym (dwz'd)        2.2 MiB       880     7,303
//	OpenResty's libluajit dbgsym         1.9 MiB         6   107,465
//
// (DWARF is the sum of the .debug_* sections, decompressed.) libcrypto's
// debug file is over 10 MiB compressed; its DWARF is still well under the
// default.
const (
	// DefaultMaxDebugInfo is the default of OpenOptions.MaxDebugInfo:
	// 256 MiB, 25 times libc's DWARF.
	DefaultMaxDebugInfo int64 = 256 << 20
	// DefaultMaxUnits is the default of OpenOptions.MaxUnits: 65,536, 30
	// times libc's units.
	DefaultMaxUnits = 1 << 16
	// DefaultMaxLineRows is the default of OpenOptions.MaxLineRows:
	// 1,048,576 rows, 10 times LuaJIT's amalgamated unit.
	DefaultMaxLineRows = 1 << 20
)

// ErrLimit is wrapped by every error that a resource bound causes (see
// LimitError), here and in the packages that share LimitError.
var ErrLimit = errors.New("over a resource limit")

// LimitError is a file, process or download over a resource bound.
type LimitError struct {
	// Where is what was being read: a file's path, "pid 1234", a stack.
	Where string
	// What is what was counted: "DWARF", "compile units", ...
	What string
	// Got is how much there is; with AtLeast, how much was counted
	// before counting stopped.
	Got     int64
	AtLeast bool
	// Limit is the bound, Unit what it counts ("bytes", "units", ...).
	Limit int64
	Unit  string
	// Field is the setting that raises it: "symbols.OpenOptions.MaxDebugInfo".
	Field string
}

func (e *LimitError) Error() string {
	got := fmt.Sprint(e.Got)
	if e.AtLeast {
		got = "more than " + fmt.Sprint(e.Got-1)
	}
	return fmt.Sprintf("%s: %s: %s %s, over the limit of %d (%s; raise it to read more)", e.Where, e.What, got, e.Unit, e.Limit, e.Field)
}

// Unwrap makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Unwrap() error { return ErrLimit }

// limits are the bounds a Binary was opened with, defaults filled in.
type limits struct {
	debugInfo int64
	units     int
	lineRows  int
}

func limitsOf(o *OpenOptions) limits {
	l := limits{debugInfo: DefaultMaxDebugInfo, units: DefaultMaxUnits, lineRows: DefaultMaxLineRows}
	if o == nil {
		return l
	}
	if o.MaxDebugInfo > 0 {
		l.debugInfo = o.MaxDebugInfo
	}
	if o.MaxUnits > 0 {
		l.units = o.MaxUnits
	}
	if o.MaxLineRows > 0 {
		l.lineRows = o.MaxLineRows
	}
	return l
}

// sectionSize is the size of s once read: decompressed for a compressed
// section (SHF_COMPRESSED, or a .zdebug_ section with its "ZLIB" header),
// as the header declares it, which is what a read allocates.
func sectionSize(s *elf.Section) uint64 {
	if strings.HasPrefix(s.Name, ".zdebug") && s.Flags&elf.SHF_COMPRESSED == 0 {
		var hdr [12]byte
		if n, _ := s.ReadAt(hdr[:], 0); n == 12 && string(hdr[:4]) == "ZLIB" {
			return binary.BigEndian.Uint64(hdr[4:])
		}
	}
	return s.Size
}

// dwarfSize is the sum of f's DWARF sections, as read.
func dwarfSize(f *elf.File) uint64 {
	var n uint64
	for _, s := range f.Sections {
		if dwarfSuffix(s.Name) != "" && s.Type != elf.SHT_NOBITS {
			n += min(sectionSize(s), 1<<62) // no wrap-around
		}
	}
	return n
}

// checkDWARF is called before f's DWARF is read (f is the binary or its
// debug file): the DWARF sections must fit MaxDebugInfo, and
// .debug_info must have at most MaxUnits units. debug/dwarf reads every
// unit header, and an abbreviation table per unit, as it opens the data:
// counting them first is what keeps a section of tiny units from costing
// gigabytes. The unit table is kept for the index.
func (b *Binary) checkDWARF(f *elf.File, path string) error {
	if n := dwarfSize(f); n > uint64(b.limits.debugInfo) {
		return b.limits.sizeError(path, "DWARF (the .debug_* sections, decompressed)", n)
	}
	t, err := unitVersionsOf(f, b.limits.units, path)
	if err != nil {
		return err
	}
	b.versions = t
	return nil
}

// checkSupplementary checks a dwz supplementary file against what is left
// of the bounds once the debug file main is counted.
func (l limits) checkSupplementary(main, sup *elf.File, path string) error {
	n := dwarfSize(main) + dwarfSize(sup)
	if n > uint64(l.debugInfo) {
		return l.sizeError(path, "DWARF of the debug file and of this supplementary file together", n)
	}
	t, err := unitVersionsOf(main, l.units, path)
	if err != nil {
		return err
	}
	_, err = unitVersionsOf(sup, l.units-len(t), path)
	var le *LimitError
	if errors.As(err, &le) {
		le.What = "units of the debug file and of this supplementary file together"
		le.Got += int64(len(t))
		le.Limit = int64(l.units)
	}
	return err
}

func (l limits) sizeError(path, what string, n uint64) error {
	return &LimitError{Where: path, What: what, Got: int64(min(n, 1<<62)), Limit: l.debugInfo, Unit: "bytes", Field: "symbols.OpenOptions.MaxDebugInfo"}
}

func (l limits) unitsError(path string, n int) error {
	return &LimitError{Where: path, What: "units in .debug_info", Got: int64(n), AtLeast: true, Limit: int64(l.units), Unit: "units", Field: "symbols.OpenOptions.MaxUnits"}
}

func (l limits) rowsError(path string, cu int64) error {
	return &LimitError{Where: path, What: fmt.Sprintf("line table of the unit at %#x", cu), Got: int64(l.lineRows) + 1, AtLeast: true, Limit: int64(l.lineRows), Unit: "rows", Field: "symbols.OpenOptions.MaxLineRows"}
}

// ReadLineTableLimit is ReadLineTable that stops after maxRows rows
// (DefaultMaxLineRows when maxRows <= 0) with a *LimitError naming
// OpenOptions.MaxLineRows; the rows read so far come back with it. path
// names the file in the error.
func ReadLineTableLimit(d *dwarf.Data, cu *dwarf.Entry, maxRows int, path string) (*LineTable, error) {
	l := limits{lineRows: maxRows}
	if maxRows <= 0 {
		l.lineRows = DefaultMaxLineRows
	}
	return readLineTable(d, cu, l.lineRows, func() error { return l.rowsError(path, int64(cu.Offset)) })
}

// LineRowsLimit is the bound on the rows of one unit's line table that
// the binary was opened with (OpenOptions.MaxLineRows).
func (b *Binary) LineRowsLimit() int { return b.limits.lineRows }
