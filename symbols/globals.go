package symbols

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"sort"
)

// Global is a variable at a fixed address: a global, or a function's
// static, with an ELF object symbol.
type Global struct {
	Name string // the symbol's name without GCC's suffixes (BaseName)
	Addr uint64 // link-time virtual address
	Size uint64 // the symbol's size in bytes
}

// GlobalsOfType lists the variables whose type is the struct with the
// given tag and size, or an array of it: ELF object symbols sized a
// multiple of the struct whose DWARF variable, at the unit's top level
// or a static inside a function, is at the symbol's address
// (DW_OP_addr) and has that type. Sorted by address; nil without DWARF.
func (b *Binary) GlobalsOfType(tag string, size int64) []Global {
	d := b.dwarf
	if d == nil || size <= 0 || tag == "" {
		return nil
	}
	syms, err := b.file.Symbols()
	if err != nil {
		return nil
	}
	cands := map[uint64]elf.Symbol{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_OBJECT && s.Value != 0 && s.Size > 0 && s.Size%uint64(size) == 0 {
			cands[s.Value] = s
		}
	}
	if len(cands) == 0 {
		return nil
	}
	var out []Global
	seen := map[uint64]bool{}
	r := d.Reader()
	for {
		cu, err := r.Next()
		if err != nil || cu == nil {
			break
		}
		if !cu.Children {
			continue
		}
		// Top-level entries of the unit; functions' children are skipped
		// (function-scope statics are nested, see below).
		for depth := 1; depth > 0; {
			e, err := r.Next()
			if err != nil || e == nil {
				depth = 0
				break
			}
			if e.Tag == 0 {
				depth--
				continue
			}
			if e.Tag == dwarf.TagVariable {
				if addr, ok := varAddress(e); ok && !seen[addr] {
					if s, ok := cands[addr]; ok && b.isStructOrArray(e, tag, size) {
						seen[addr] = true
						out = append(out, Global{Name: BaseName(s.Name), Addr: addr, Size: s.Size})
					}
				}
			}
			if e.Children {
				// Static locals (a function's "static ngx_event_t ev")
				// live in subprograms and lexical blocks.
				if e.Tag == dwarf.TagSubprogram || e.Tag == dwarf.TagLexDwarfBlock {
					depth++
					continue
				}
				r.SkipChildren()
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// varAddress decodes a location that is exactly DW_OP_addr <address>.
func varAddress(e *dwarf.Entry) (uint64, bool) {
	loc, ok := e.Val(dwarf.AttrLocation).([]byte)
	if !ok || len(loc) != 9 || loc[0] != opAddr {
		return 0, false
	}
	return binary.LittleEndian.Uint64(loc[1:]), true
}

// isStructOrArray reports whether the variable e is a struct with the
// given tag and size, or an array (of arrays) of it.
func (b *Binary) isStructOrArray(e *dwarf.Entry, tag string, size int64) bool {
	off, ok := b.Attr(e, dwarf.AttrType).(dwarf.Offset)
	if !ok {
		return false
	}
	t, err := b.dwarf.Type(off)
	if err != nil {
		return false
	}
	u := Underlying(t)
	for range 8 {
		a, ok := u.(*dwarf.ArrayType)
		if !ok {
			break
		}
		u = Underlying(a.Type)
	}
	st, ok := u.(*dwarf.StructType)
	return ok && st.StructName == tag && st.Size() == size
}
