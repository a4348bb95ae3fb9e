package debuginfod

import (
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
)

// maxNoteSize bounds the note sections and segments read for the build-id:
// real ones are a few hundred bytes.
const maxNoteSize = 1 << 20

// ntGNUBuildID is the type of a "GNU" note holding the build-id.
const ntGNUBuildID = 3

// checkELF checks that the size bytes of r are a whole ELF file (every
// section and segment within them) whose GNU build-id note is id, and
// returns an error wrapping ErrBuildIDMismatch when not.
func checkELF(r io.ReaderAt, size int64, id string) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("%w: not an ELF file: %v", ErrBuildIDMismatch, err)
	}
	end := uint64(size)
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && s.Type != elf.SHT_NULL && (s.Offset > end || s.FileSize > end-s.Offset) {
			return fmt.Errorf("%w: ELF file cut short: section %s ends past its %d bytes", ErrBuildIDMismatch, s.Name, size)
		}
	}
	for i, p := range f.Progs {
		if p.Off > end || p.Filesz > end-p.Off {
			return fmt.Errorf("%w: ELF file cut short: segment %d ends past its %d bytes", ErrBuildIDMismatch, i, size)
		}
	}
	got, ok := gnuBuildID(f)
	switch {
	case !ok:
		return fmt.Errorf("%w: the ELF file has no GNU build-id note", ErrBuildIDMismatch)
	case got != id:
		return fmt.Errorf("%w: the ELF file's build-id is %s", ErrBuildIDMismatch, got)
	}
	return nil
}

// gnuBuildID is the first NT_GNU_BUILD_ID note of the note sections, or
// of the note segments when there are no sections.
func gnuBuildID(f *elf.File) (string, bool) {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE || s.FileSize > maxNoteSize {
			continue
		}
		if data, err := s.Data(); err == nil {
			if id, ok := findNote(data, f.ByteOrder, s.Addralign); ok {
				return id, true
			}
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > maxNoteSize {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err == nil {
			if id, ok := findNote(data, f.ByteOrder, p.Align); ok {
				return id, true
			}
		}
	}
	return "", false
}

// findNote finds the GNU build-id among the notes in data, each one's name
// and description padded to align (8 for an 8-aligned note section, else
// 4).
func findNote(data []byte, bo binary.ByteOrder, align uint64) (string, bool) {
	if align != 8 {
		align = 4
	}
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	for len(data) >= 12 {
		nameSz := uint64(bo.Uint32(data[0:]))
		descSz := uint64(bo.Uint32(data[4:]))
		typ := bo.Uint32(data[8:])
		descOff := 12 + pad(nameSz)
		descEnd := descOff + descSz
		if descEnd > uint64(len(data)) {
			return "", false
		}
		if typ == ntGNUBuildID && nameSz == 4 && string(data[12:16]) == "GNU\x00" && descSz > 0 {
			return hex.EncodeToString(data[descOff:descEnd]), true
		}
		next := pad(descEnd)
		if next >= uint64(len(data)) {
			return "", false
		}
		data = data[next:]
	}
	return "", false
}
