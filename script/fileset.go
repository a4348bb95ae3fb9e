package script

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Sentinel errors, for errors.Is.
var (
	// ErrSyntax: the text does not parse.
	ErrSyntax = errors.New("syntax error")
	// ErrResolve: a name, type or line does not exist in the binary, or
	// an expression does not fit its types.
	ErrResolve = errors.New("cannot resolve")
	// ErrInclude: an included file cannot be read or includes itself.
	ErrInclude = errors.New("cannot include")
)

// FileSet maps positions to files, like go/token: each file's bytes take
// a range of one position space, so a node's position names its file.
type FileSet struct {
	files []*file
	next  int
}

type file struct {
	name  string
	base  int
	src   string
	lines []int // offsets of line starts
}

// NewFileSet returns an empty set.
func NewFileSet() *FileSet { return &FileSet{next: 1} }

// add registers src and returns its base position.
func (fs *FileSet) add(name, src string) int {
	f := &file{name: name, base: fs.next, src: src, lines: []int{0}}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			f.lines = append(f.lines, i+1)
		}
	}
	fs.files = append(fs.files, f)
	fs.next += len(src) + 1
	return f.base
}

func (fs *FileSet) file(pos int) *file {
	i := sort.Search(len(fs.files), func(i int) bool { return fs.files[i].base > pos }) - 1
	if i < 0 {
		return nil
	}
	return fs.files[i]
}

// Position is a resolved position: file, 1-based line and column, and
// the text of the line for carets.
type Position struct {
	File     string
	Line     int
	Col      int
	LineText string
}

func (p Position) String() string {
	if p.File == "" {
		return "-"
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Position resolves pos.
func (fs *FileSet) Position(pos int) Position {
	f := fs.file(pos)
	if f == nil {
		return Position{}
	}
	off := min(max(pos-f.base, 0), len(f.src))
	i := sort.Search(len(f.lines), func(i int) bool { return f.lines[i] > off }) - 1
	start := f.lines[i]
	end := strings.IndexByte(f.src[start:], '\n')
	if end < 0 {
		end = len(f.src) - start
	}
	return Position{File: f.name, Line: i + 1, Col: off - start + 1, LineText: f.src[start : start+end]}
}

// Text returns the source between two positions of one file.
func (fs *FileSet) Text(from, to int) string {
	f := fs.file(from)
	if f == nil || to < from {
		return ""
	}
	a, b := from-f.base, min(to-f.base, len(f.src))
	if a < 0 || a > b {
		return ""
	}
	return f.src[a:b]
}

// Error is a problem at a position of a script.
type Error struct {
	Pos  Position
	Msg  string
	Hint string // the fix, when there is one
	Err  error  // a sentinel, for errors.Is
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Pos, e.Msg)
	if e.Pos.File != "" {
		// Tabs keep their width so that the caret lines up.
		pad := make([]byte, 0, e.Pos.Col)
		for i := 0; i < e.Pos.Col-1 && i < len(e.Pos.LineText); i++ {
			if e.Pos.LineText[i] == '\t' {
				pad = append(pad, '\t')
			} else {
				pad = append(pad, ' ')
			}
		}
		fmt.Fprintf(&b, "\n    %s\n    %s^", e.Pos.LineText, pad)
	}
	if e.Hint != "" {
		fmt.Fprintf(&b, "\n  hint: %s", e.Hint)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorList is every error found, in source order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	s := strings.Join(parts, "\n")
	if len(l) > 1 {
		s += fmt.Sprintf("\n%d errors", len(l))
	}
	return s
}

// Unwrap lets errors.Is see each error's sentinel.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}
