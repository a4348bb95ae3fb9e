package symbols

import (
	"debug/elf"
	"fmt"
)

// Code returns up to n bytes of machine code at the virtual address addr,
// read from the executable section that holds addr: fewer when the
// section ends first. An address in no executable section is ErrNotCode.
// The bytes are for an instruction decoder (golang.org/x/arch/x86/x86asm):
// to check an instruction boundary, or to read one instruction.
func (b *Binary) Code(addr uint64, n int) ([]byte, error) {
	for _, s := range b.file.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_EXECINSTR == 0 || addr < s.Addr || addr-s.Addr >= s.Size {
			continue
		}
		n = int(min(uint64(max(n, 0)), s.Size-(addr-s.Addr)))
		code := make([]byte, n)
		if got, err := s.ReadAt(code, int64(addr-s.Addr)); got < n {
			return nil, fmt.Errorf("%s: section %s at %#x: %w", b.Path, s.Name, addr, err)
		}
		return code, nil
	}
	return nil, fmt.Errorf("%s: %#x: %w", b.Path, addr, ErrNotCode)
}
