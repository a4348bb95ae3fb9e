package symbols

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
)

// DWARF supplementary files. `dwz -m` (Debian's dh_dwz does it for every
// package with several ELF files) moves the types and strings that several
// debug files share into one supplementary file, and the debug files then
// point into it: DW_FORM_GNU_ref_alt and DW_FORM_GNU_strp_alt, with
// .gnu_debugaltlink naming the file and its build-id; or, in DWARF 5,
// DW_FORM_ref_sup4/8 and DW_FORM_strp_sup, with .debug_sup. debug/dwarf
// reads those values but does not follow them. readDWARF therefore merges
// the two files into one dwarf.Data: each section is the debug file's
// followed by the supplementary file's, so every offset of the debug file
// stays valid (location lists, line tables, ranges and .debug_addr are
// used as they are), and dieform.go rewrites, in place, the values that
// move: references and string offsets into the supplementary file become
// ordinary ones, and the supplementary file's own offsets shift by the
// debug file's section lengths.

// supLink is what a debug file says of its supplementary file.
type supLink struct {
	name string // as written: usually absolute, else relative to the debug file
	id   string // its build-id (or .debug_sup checksum), hex; may be empty
}

// describe names the file for messages.
func (l supLink) describe() string {
	switch {
	case l.name != "" && l.id != "":
		return fmt.Sprintf("%s (build-id %s)", l.name, l.id)
	case l.name != "":
		return l.name
	}
	return "with build-id " + l.id
}

// readSupLink reads the link to a supplementary file, if f has one.
func readSupLink(f *elf.File) (supLink, bool, error) {
	if s := f.Section(".gnu_debugaltlink"); s != nil {
		data, err := s.Data()
		if err != nil {
			return supLink{}, true, fmt.Errorf("section .gnu_debugaltlink: %w", err)
		}
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return supLink{}, true, errors.New("section .gnu_debugaltlink: no NUL-terminated file name")
		}
		l := supLink{name: string(data[:i]), id: hex.EncodeToString(data[i+1:])}
		if l.name == "" && l.id == "" {
			return supLink{}, true, errors.New("section .gnu_debugaltlink names no file")
		}
		return l, true, nil
	}
	s := f.Section(".debug_sup")
	if s == nil {
		return supLink{}, false, nil
	}
	data, err := s.Data()
	if err != nil {
		return supLink{}, true, fmt.Errorf("section .debug_sup: %w", err)
	}
	sup, name, id, err := parseDebugSup(data, f.ByteOrder)
	if err != nil {
		return supLink{}, true, err
	}
	if sup {
		return supLink{}, false, nil // f is a supplementary file itself
	}
	if name == "" && id == "" {
		return supLink{}, true, errors.New("section .debug_sup names no file")
	}
	return supLink{name: name, id: id}, true, nil
}

// parseDebugSup reads a DWARF 5 .debug_sup section.
func parseDebugSup(data []byte, order binary.ByteOrder) (isSup bool, name, checksum string, err error) {
	c := &dwarfCursor{section: ".debug_sup", data: data, order: order}
	if v := c.uint(2, "version"); c.err == nil && v != 5 {
		c.fail(0, "version %d, want 5", v)
	}
	isSup = c.uint(1, "is_supplementary") == 1
	start := c.off
	c.cstring("file name")
	if c.err == nil {
		name = string(data[start : c.off-1])
	}
	sum := c.take(c.uleb("checksum length"), "checksum")
	if c.err != nil {
		return false, "", "", c.err
	}
	return isSup, name, hex.EncodeToString(sum), nil
}

// supplementaryID is the identity a link names a supplementary file by:
// its build-id or, failing that, its .debug_sup checksum.
func supplementaryID(f *elf.File) string {
	if id := buildID(f); id != "" {
		return id
	}
	if s := f.Section(".debug_sup"); s != nil {
		if data, err := s.Data(); err == nil {
			if sup, _, sum, err := parseDebugSup(data, f.ByteOrder); err == nil && sup {
				return sum
			}
		}
	}
	return ""
}

// debugFilePath is the path of the file whose DWARF useDWARF reads: the
// binary itself ("embedded"), or the path after the kind in source
// ("build-id PATH", "debuglink PATH", "debuginfod PATH").
func debugFilePath(b *Binary, source string) string {
	if _, path, ok := strings.Cut(source, " "); ok && source != "embedded" {
		return path
	}
	return b.Path
}

// readDWARF reads f's DWARF, merged with its supplementary file when it
// has one. note is for DebugSource: " + dwz PATH" when merged, otherwise
// why not. An unusable or missing supplementary file is never an error:
// f's own DWARF is used as far as it goes (the types and names that were
// moved out are missing), and note tells the user.
func (b *Binary) readDWARF(f *elf.File, source string, opts *OpenOptions) (d *dwarf.Data, note string, err error) {
	link, ok, linkErr := readSupLink(f)
	if !ok {
		d, err := f.DWARF()
		return d, "", err
	}
	alone := func(note string) (*dwarf.Data, string, error) {
		d, err := f.DWARF()
		return d, note, err
	}
	if linkErr != nil {
		return alone(fmt.Sprintf(" (%v: the types and names of its dwz supplementary file are missing)", linkErr))
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	sup, path, searched, fetchErr := b.findSupplementary(link, debugFilePath(b, source), f, opts)
	if sup == nil {
		note := fmt.Sprintf(" (dwz supplementary file %s not found: searched %s", link.describe(), strings.Join(searched, ", "))
		if fetchErr != nil {
			note += "; debuginfod: " + fetchErr.Error()
		}
		return alone(note + "; the types and names it holds are missing)")
	}
	defer sup.Close()
	if err := b.limits.checkSupplementary(f, sup, path); err != nil {
		return alone(fmt.Sprintf(" (dwz supplementary file %s unusable: %v; the types and names it holds are missing)", path, err))
	}
	merged, err := mergeDWARF(f, sup)
	if err != nil {
		return alone(fmt.Sprintf(" (dwz supplementary file %s unusable: %v; the types and names it holds are missing)", path, err))
	}
	return merged, " + dwz " + path, nil
}

// findSupplementary looks for the supplementary file as gdb does: by the
// name in the link (relative to the debug file's directory when it is not
// absolute); by its build-id under the debug root and each debug
// directory; by its name moved from /usr/lib/debug to the debug root and
// each debug directory (an unpacked dbgsym package); then by a fetch.
// Each candidate must have the link's build-id. searched lists where it
// looked, with why a file there was not taken.
func (b *Binary) findSupplementary(link supLink, debugPath string, main *elf.File, opts *OpenOptions) (sup *elf.File, path string, searched []string, fetchErr error) {
	root := opts.DebugRoot
	if root == "" {
		root = "/usr/lib/debug"
	}
	var candidates []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			candidates = append(candidates, p)
		}
	}
	if name := link.name; name != "" {
		if !filepath.IsAbs(name) {
			real, err := filepath.EvalSymlinks(debugPath)
			if err != nil {
				real = debugPath
			}
			name = filepath.Join(filepath.Dir(real), name)
		}
		add(name)
	}
	dirs := append([]string{root}, opts.DebugDirs...)
	if len(link.id) > 2 {
		for _, dir := range dirs {
			add(filepath.Join(dir, ".build-id", link.id[:2], link.id[2:]+".debug"))
		}
	}
	if rest, ok := strings.CutPrefix(filepath.Clean(link.name), "/usr/lib/debug/"); ok {
		for _, dir := range dirs {
			add(filepath.Join(dir, rest))
		}
	}
	for _, c := range candidates {
		f, why := openSupplementary(c, link, main)
		if f != nil {
			return f, c, searched, nil
		}
		searched = append(searched, c+why)
	}
	if opts.Fetch == nil || link.id == "" {
		return nil, "", searched, nil
	}
	searched = append(searched, "debuginfod")
	p, err := opts.Fetch(FetchRequest{BuildID: link.id, Path: b.Path, Kind: b.Kind})
	if err != nil {
		return nil, "", searched, err
	}
	f, why := openSupplementary(p, link, main)
	if f == nil {
		return nil, "", searched, fmt.Errorf("%s: not the supplementary file%s", p, why)
	}
	return f, "debuginfod " + p, searched, nil
}

// openSupplementary opens path if it is the supplementary file the link
// names; otherwise why is why not, for a message ("" when there is no
// such file).
func openSupplementary(path string, link supLink, main *elf.File) (f *elf.File, why string) {
	f, err := openELF(path, limits{debugInfo: math.MaxInt64}, false) // bounded by checkSupplementary
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ""
		}
		return nil, fmt.Sprintf(" (%v)", err)
	}
	switch id := supplementaryID(f); {
	case f.Section(".debug_info") == nil:
		why = " (no .debug_info)"
	case link.id != "" && id != link.id:
		why = fmt.Sprintf(" (build-id %q, want %s)", id, link.id)
	case f.ByteOrder != main.ByteOrder:
		why = " (other byte order)"
	default:
		return f, ""
	}
	f.Close()
	return nil, why
}

// dwarfBytes are the sections a merge concatenates.
type dwarfBytes struct {
	abbrev, info, str, line, lineStr []byte
}

// mergeDWARF makes one dwarf.Data of a debug file and its supplementary
// file (see the top of this file).
func mergeDWARF(main, sup *elf.File) (*dwarf.Data, error) {
	for _, f := range []*elf.File{main, sup} {
		if err := checkUnrelocated(f); err != nil {
			return nil, err
		}
	}
	var out dwarfBytes
	var s mergeShift
	var supLineStr uint64
	for _, part := range []struct {
		suffix          string
		data            *[]byte
		mainLen, supLen *uint64
	}{
		{"abbrev", &out.abbrev, &s.abbrev, nil},
		{"info", &out.info, &s.info, &s.supInfo},
		{"str", &out.str, &s.str, &s.supStr},
		{"line", &out.line, &s.line, nil},
		{"line_str", &out.lineStr, &s.lineStr, &supLineStr},
	} {
		data, mainLen, err := catSections(dwarfSection(main, part.suffix), dwarfSection(sup, part.suffix))
		if err != nil {
			return nil, err
		}
		*part.data, *part.mainLen = data, uint64(mainLen)
		if part.supLen != nil {
			*part.supLen = uint64(len(data) - mainLen)
		}
	}
	s.supHasLineStr = supLineStr > 0
	if err := patchMerged(out, &s, main.ByteOrder); err != nil {
		return nil, err
	}
	rest, err := dwarfSectionData(main)
	if err != nil {
		return nil, err
	}
	d, err := dwarf.New(out.abbrev, nil, nil, out.info, out.line, nil, rest["ranges"], out.str)
	if err != nil {
		return nil, err
	}
	if len(out.lineStr) > 0 {
		if err := d.AddSection(".debug_line_str", out.lineStr); err != nil {
			return nil, err
		}
	}
	for i, sec := range main.Sections {
		switch suffix := dwarfSuffix(sec.Name); suffix {
		case "", "abbrev", "info", "str", "line", "line_str", "ranges":
		case "types":
			err = d.AddTypes(fmt.Sprintf("types-%d", i), rest[fmt.Sprintf("types-%d", i)])
		default:
			err = d.AddSection(".debug_"+suffix, rest[suffix])
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// mergeSections concatenates the sections, the main file's first, and
// patches the values that move.
func mergeSections(m, sup dwarfBytes, order binary.ByteOrder) (dwarfBytes, error) {
	s := mergeShift{
		info: uint64(len(m.info)), abbrev: uint64(len(m.abbrev)), str: uint64(len(m.str)),
		line: uint64(len(m.line)), lineStr: uint64(len(m.lineStr)),
		supInfo: uint64(len(sup.info)), supStr: uint64(len(sup.str)), supHasLineStr: len(sup.lineStr) > 0,
	}
	cat := func(a, b []byte) []byte { return append(append(make([]byte, 0, len(a)+len(b)), a...), b...) }
	out := dwarfBytes{
		abbrev: cat(m.abbrev, sup.abbrev), info: cat(m.info, sup.info), str: cat(m.str, sup.str),
		line: cat(m.line, sup.line), lineStr: cat(m.lineStr, sup.lineStr),
	}
	return out, patchMerged(out, &s, order)
}

// patchMerged patches concatenated sections in place.
func patchMerged(out dwarfBytes, s *mergeShift, order binary.ByteOrder) error {
	if err := patchUnits(out.info[:s.info], out.abbrev[:s.abbrev], order, patchMain, s); err != nil {
		return err
	}
	if err := patchUnits(out.info[s.info:], out.abbrev[s.abbrev:], order, patchSup, s); err != nil {
		return fmt.Errorf("supplementary file: %w", err)
	}
	if err := patchLineStrings(out.line[s.line:], order, s); err != nil {
		return fmt.Errorf("supplementary file: %w", err)
	}
	return nil
}

// dwarfSection is f's .debug_SUFFIX (or .zdebug_SUFFIX), or nil.
func dwarfSection(f *elf.File, suffix string) *elf.Section {
	if s := f.Section(".debug_" + suffix); s != nil {
		return s
	}
	return f.Section(".zdebug_" + suffix)
}

// catSections reads a section of the main file and the same of the
// supplementary file (either may be nil) into one buffer, the main file's
// first. Plain sections are read straight into it, once it is known that
// the files hold them (their last bytes read): an ELF header that lies
// about a size costs an error, not that much memory.
func catSections(m, sup *elf.Section) (data []byte, mainLen int, err error) {
	plain := func(s *elf.Section) bool {
		if s == nil {
			return true
		}
		var last [1]byte
		return s.Type != elf.SHT_NOBITS && s.Flags&elf.SHF_COMPRESSED == 0 && !strings.HasPrefix(s.Name, ".zdebug") &&
			s.ReaderAt != nil && (s.Size == 0 || s.Size <= math.MaxInt32 && readFull(s, last[:], int64(s.Size)-1) == nil)
	}
	size := func(s *elf.Section) int {
		if s == nil {
			return 0
		}
		return int(s.Size)
	}
	if plain(m) && plain(sup) {
		data = make([]byte, size(m)+size(sup))
		mainLen = size(m)
		for _, p := range []struct {
			s    *elf.Section
			into []byte
			who  string
		}{{m, data[:mainLen], ""}, {sup, data[mainLen:], "supplementary file: "}} {
			if p.s != nil {
				if err := readFull(p.s, p.into, 0); err != nil {
					return nil, 0, fmt.Errorf("%ssection %s: %w", p.who, p.s.Name, err)
				}
			}
		}
		return data, mainLen, nil
	}
	var parts [2][]byte
	for i, s := range []*elf.Section{m, sup} {
		if s == nil {
			continue
		}
		if parts[i], err = s.Data(); err != nil {
			who := ""
			if i == 1 {
				who = "supplementary file: "
			}
			return nil, 0, fmt.Errorf("%ssection %s: %w", who, s.Name, err)
		}
	}
	return append(append(make([]byte, 0, len(parts[0])+len(parts[1])), parts[0]...), parts[1]...), len(parts[0]), nil
}

// readFull fills b from the section at off.
func readFull(s *elf.Section, b []byte, off int64) error {
	_, err := s.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// dwarfSuffix is what follows .debug_ (or .zdebug_) in a section name.
func dwarfSuffix(name string) string {
	if s, ok := strings.CutPrefix(name, ".debug_"); ok {
		return s
	}
	if s, ok := strings.CutPrefix(name, ".zdebug_"); ok {
		return s
	}
	return ""
}

// dwarfSectionData reads f's other DWARF sections, decompressed, by
// suffix; .debug_types sections, which can be several, as "types-INDEX".
func dwarfSectionData(f *elf.File) (map[string][]byte, error) {
	out := map[string][]byte{}
	for i, s := range f.Sections {
		suffix := dwarfSuffix(s.Name)
		switch suffix {
		case "", "abbrev", "info", "str", "line", "line_str":
			continue
		case "types":
			suffix = fmt.Sprintf("types-%d", i)
		}
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", s.Name, err)
		}
		out[suffix] = data
	}
	return out, nil
}

// checkUnrelocated refuses a file whose DWARF needs relocating (an object
// file): debug/dwarf's ELF reader applies relocations, the merge does not.
func checkUnrelocated(f *elf.File) error {
	if f.Type == elf.ET_EXEC {
		return nil
	}
	for _, r := range f.Sections {
		if (r.Type == elf.SHT_REL || r.Type == elf.SHT_RELA) && int(r.Info) < len(f.Sections) && dwarfSuffix(f.Sections[r.Info].Name) != "" {
			return fmt.Errorf("section %s relocates DWARF: not supported with a supplementary file", r.Name)
		}
	}
	return nil
}
