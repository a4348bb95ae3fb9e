package symbols

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotELF is wrapped by the errors of Open for a file that is not a
// whole ELF file: empty, text, a directory, cut short, or with a header
// that points past its end.
var ErrNotELF = errors.New("not an ELF file")

// openELF opens path as an ELF file and checks what debug/elf takes on
// trust: that every section and segment lies within the file, and that
// no compressed section decompresses to more than MaxDebugInfo. Its
// errors name the path and what was expected, never a bare "EOF".
func openELF(path string, l limits, segments bool) (*elf.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err // names the path already
	}
	size := fi.Size()
	switch {
	case fi.IsDir():
		return nil, fmt.Errorf("%s: %w: it is a directory", path, ErrNotELF)
	case !fi.Mode().IsRegular():
		// A FIFO or a device would block or never end.
		return nil, fmt.Errorf("%s: %w: it is not a regular file (%v)", path, ErrNotELF, fi.Mode().Type())
	case size == 0:
		return nil, fmt.Errorf("%s: %w: the file is empty", path, ErrNotELF)
	}
	if magic, err := readMagic(path); err != nil {
		return nil, err
	} else if magic != elf.ELFMAG {
		return nil, fmt.Errorf("%s: %w: it starts with %q, not \"\\x7fELF\"", path, ErrNotELF, magic)
	}
	f, err := elf.Open(path)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s: %w: truncated: %s past the end of the file (file size %d bytes)", path, ErrNotELF, tablesPastEnd(path, size), size)
		}
		return nil, fmt.Errorf("%s: %w: bad ELF header: %v", path, ErrNotELF, err)
	}
	if err := checkELF(f, path, uint64(size), l, segments); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// readMagic reads the first 4 bytes of path (fewer when it is shorter).
func readMagic(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	var b [4]byte
	n, err := io.ReadFull(fh, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return string(b[:n]), nil
}

// checkELF checks that f's sections (and, with segments, its segments)
// lie within its end bytes, and that no compressed section decompresses
// to more than the DWARF bound. Debug files are not asked about
// segments: strip tools may keep the program headers of the binary.
func checkELF(f *elf.File, path string, end uint64, l limits, segments bool) error {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Type == elf.SHT_NULL {
			continue
		}
		if s.Offset > end || s.FileSize > end-s.Offset {
			return fmt.Errorf("%s: %w: truncated: section %s ends past the end of the file (offset %#x, size %#x, file size %d bytes)", path, ErrNotELF, s.Name, s.Offset, s.FileSize, end)
		}
		if s.Flags&elf.SHF_COMPRESSED != 0 || dwarfSuffix(s.Name) != "" {
			if n := sectionSize(s); n > uint64(l.debugInfo) {
				return l.sizeError(path, "section "+s.Name+", decompressed", n)
			}
		}
	}
	for i, p := range f.Progs {
		if segments && p.Off > end || p.Filesz > end-p.Off {
			return fmt.Errorf("%s: %w: truncated: segment %d (%v) ends past the end of the file (offset %#x, size %#x, file size %d bytes)", path, ErrNotELF, i, p.Type, p.Off, p.Filesz, end)
		}
	}
	return nil
}

// tablesPastEnd says which header table of the 64-bit ELF file at path
// ends past its size bytes.
func tablesPastEnd(path string, size int64) string {
	const what = "its ELF headers end"
	fh, err := os.Open(path)
	if err != nil {
		return what
	}
	defer fh.Close()
	var h [64]byte
	if _, err := io.ReadFull(fh, h[:]); err != nil || elf.Class(h[elf.EI_CLASS]) != elf.ELFCLASS64 {
		return what
	}
	var order binary.ByteOrder = binary.LittleEndian
	if elf.Data(h[elf.EI_DATA]) == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	for _, t := range []struct {
		name     string
		off      uint64
		num, ent uint16
	}{
		{"program header table", order.Uint64(h[0x20:]), order.Uint16(h[0x38:]), order.Uint16(h[0x36:])},
		{"section header table", order.Uint64(h[0x28:]), order.Uint16(h[0x3c:]), order.Uint16(h[0x3a:])},
	} {
		if end := t.off + uint64(t.num)*uint64(t.ent); end > uint64(size) || end < t.off {
			return fmt.Sprintf("its %s (offset %#x, %d entries) ends", t.name, t.off, t.num)
		}
	}
	return what
}
