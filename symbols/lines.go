package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoCode: a source line has no machine code (a comment, a declaration,
// or code the compiler removed).
var ErrNoCode = errors.New("no code at this line")

// ErrFileNotFound: no compile unit has the source file.
var ErrFileNotFound = errors.New("source file not found in the line table")

// ErrInlined: a function has no out-of-line instance.
var ErrInlined = errors.New("function is inlined everywhere")

// LineSite is an address where a source line's code starts.
type LineSite struct {
	Address  uint64
	Function *Function // the instance whose code holds Address
	File     string
	Line     int
	// Inlined names the inlined function the line belongs to, when the
	// line is inside an inlined copy.
	Inlined string
}

// LineError explains a line without code: the nearest lines that have some.
type LineError struct {
	File    string
	Line    int
	Nearest []int
}

func (e *LineError) Error() string {
	s := fmt.Sprintf("%v: %s:%d", ErrNoCode, e.File, e.Line)
	if len(e.Nearest) > 0 {
		var ls []string
		for _, n := range e.Nearest {
			ls = append(ls, fmt.Sprint(n))
		}
		s += fmt.Sprintf("; lines nearby with code: %s", strings.Join(ls, ", "))
	}
	return s
}

func (e *LineError) Unwrap() error { return ErrNoCode }

// sameFile matches a line-table file name against what the user wrote:
// the same path, or a suffix of it at a directory boundary.
func sameFile(tableName, want string) bool {
	tableName, want = filepath.Clean(tableName), filepath.Clean(want)
	return tableName == want || strings.HasSuffix(tableName, "/"+want)
}

// LineSites returns, for FILE:LINE, one address per function instance
// and per inlined copy: the lowest address of the line there, as gdb
// places a breakpoint.
func (b *Binary) LineSites(file string, line int) ([]LineSite, error) {
	if b.dwarf == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoDebugInfo, NoDebugInfoHint)
	}
	var rows []LineSite
	var fileNames []string
	fileSeen := false
	nearby := map[int]bool{}
	r := b.dwarf.Reader()
	for {
		cu, err := r.Next()
		if err != nil || cu == nil {
			break
		}
		if cu.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		r.SkipChildren()
		lr, err := b.dwarf.LineReader(cu)
		if err != nil || lr == nil {
			continue
		}
		match := false
		for _, f := range lr.Files() {
			if f != nil && sameFile(f.Name, file) {
				match = true
				fileNames = append(fileNames, f.Name)
			}
		}
		if !match {
			continue
		}
		fileSeen = true
		var e dwarf.LineEntry
		prevHere := false
		for n := 0; ; n++ {
			if err := lr.Next(&e); err != nil {
				if err != io.EOF {
					break
				}
				break
			}
			if n == b.limits.lineRows {
				return nil, b.limits.rowsError(b.Path, int64(cu.Offset))
			}
			here := e.File != nil && sameFile(e.File.Name, file)
			if here && e.Line > 0 && !e.EndSequence {
				nearby[e.Line] = true
			}
			isLine := here && e.Line == line && e.IsStmt && !e.EndSequence
			if isLine && !prevHere {
				rows = append(rows, LineSite{Address: e.Address, File: e.File.Name, Line: line})
			}
			prevHere = here && e.Line == line && !e.EndSequence
		}
	}
	if !fileSeen {
		return nil, fmt.Errorf("%w: %q in %s", ErrFileNotFound, file, b.Path)
	}
	_ = fileNames
	// One site per instance and inlined copy: the lowest address.
	sort.Slice(rows, func(i, j int) bool { return rows[i].Address < rows[j].Address })
	seen := map[string]bool{}
	var out []LineSite
	for _, row := range rows {
		fn := b.Symbolize(row.Address)
		if fn == nil {
			continue // a .cold part or padding: not a place we can name
		}
		inl, inlOff := b.inlinedAt(fn, row.Address)
		key := fmt.Sprintf("%s/%d", fn.Symbol, inlOff)
		if seen[key] {
			continue
		}
		seen[key] = true
		row.Function, row.Inlined = fn, inl
		out = append(out, row)
	}
	if len(out) == 0 {
		var ns []int
		for n := range nearby {
			if n != line {
				ns = append(ns, n)
			}
		}
		sort.Slice(ns, func(i, j int) bool {
			return abs(ns[i]-line) < abs(ns[j]-line) || abs(ns[i]-line) == abs(ns[j]-line) && ns[i] < ns[j]
		})
		if len(ns) > 4 {
			ns = ns[:4]
		}
		sort.Ints(ns)
		return nil, &LineError{File: file, Line: line, Nearest: ns}
	}
	return out, nil
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// inlinedAt returns the innermost inlined function whose code covers pc
// inside the instance, and that copy's DIE offset; "" and 0 outside any.
func (b *Binary) inlinedAt(fn *Function, pc uint64) (string, dwarf.Offset) {
	die, _ := b.subprogram(fn)
	if die == 0 {
		return "", 0
	}
	r := b.dwarf.Reader()
	r.Seek(die)
	sp, err := r.Next()
	if err != nil || sp == nil || !sp.Children {
		return "", 0
	}
	name, off := "", dwarf.Offset(0)
	depth := 1
	for depth > 0 {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			continue
		}
		covers := false
		if e.Tag == dwarf.TagInlinedSubroutine || e.Tag == dwarf.TagLexDwarfBlock {
			if rs, err := b.dwarf.Ranges(e); err == nil {
				for _, rg := range rs {
					covers = covers || pc >= rg[0] && pc < rg[1]
				}
			}
		}
		if e.Tag == dwarf.TagInlinedSubroutine && covers {
			name, _ = b.Attr(e, dwarf.AttrName).(string)
			off = e.Offset
		}
		if e.Children {
			if covers || e.Tag == dwarf.TagLexDwarfBlock {
				depth++
			} else {
				r.SkipChildren()
			}
		}
	}
	return name, off
}

// InlineSite is where a call was inlined.
type InlineSite struct {
	Caller string // the function the call was inlined into
	File   string // the call's file and line
	Line   int
	Low    uint64 // the inlined code's first address
}

// InlineSites lists where the C function name was inlined. It reads all
// of the DWARF, so it is for explaining errors, not for hot paths.
func (b *Binary) InlineSites(name string) []InlineSite {
	if b.dwarf == nil {
		return nil
	}
	var out []InlineSite
	r := b.dwarf.Reader()
	var files []*dwarf.LineFile
	var caller string
	depth := 0
	callerDepth := -1
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if depth <= callerDepth {
				callerDepth, caller = -1, ""
			}
			continue
		}
		switch e.Tag {
		case dwarf.TagCompileUnit:
			files = nil
			if lr, err := b.dwarf.LineReader(e); err == nil && lr != nil {
				files = lr.Files()
			}
		case dwarf.TagSubprogram:
			if callerDepth < 0 {
				caller, _ = b.Attr(e, dwarf.AttrName).(string)
				callerDepth = depth
			}
		case dwarf.TagInlinedSubroutine:
			if call := b.InlinedCall(e); call.Name == name {
				s := InlineSite{Caller: caller, Line: call.CallLine}
				if i := call.CallFile; i >= 0 && i < len(files) && files[i] != nil {
					s.File = files[i].Name
				}
				if rs, err := b.dwarf.Ranges(e); err == nil && len(rs) > 0 {
					s.Low = rs[0][0]
				}
				out = append(out, s)
			}
		}
		if e.Children {
			depth++
		}
	}
	return out
}

// ParamsAt returns the parameters of an instance with their locations at
// pc, for probes inside a function. Values known only at entry
// (DW_OP_entry_value) or kept in the stack frame are reported unavailable.
func (b *Binary) ParamsAt(fn *Function, pc uint64) ([]Param, error) {
	if pc == fn.Address {
		return b.Params(fn)
	}
	return b.params(fn, pc)
}

// midFunctionFrame: the frame base is only known at entry without CFI.
var errMidFunctionFrame = errors.New("kept in the stack frame; inside a function only register values are read (probe the entry instead)")

func checkMidFunction(expr []byte) error {
	if len(expr) > 0 && (expr[0] == opEntryValue || expr[0] == opGNUEntryVal) {
		return errors.New("only known at the function's entry (DW_OP_entry_value); probe the entry instead")
	}
	return nil
}
