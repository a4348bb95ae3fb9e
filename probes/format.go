package probes

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"hash/maphash"
	"strconv"
	"sync/atomic"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// This file formats the values of an event as symbols.Plan.Format does,
// byte for byte, but with the choice that depends on the plan alone (the
// read kind, the DWARF type) made once per slot, by newLayout, instead of
// at every hit; the differential tests (decode_test.go) hold it to the
// old decoder. Kinds that are rare in events (enums, sockaddrs, arrays)
// still go through Plan.Format.

// slotFormat is how a slot's value is formatted.
type slotFormat uint8

const (
	formatPlan    slotFormat = iota // symbols.Plan.Format
	formatCString                   // a NUL-terminated string, quoted
	formatNgxStr                    // an ngx_str_t, quoted
	formatUint                      // unsigned decimal, bitfields included
	formatInt                       // signed decimal, bitfields included
	formatPointer                   // hexadecimal with 0x
)

// newSlot places plan p at offset with a data area of data bytes.
func newSlot(p *symbols.Plan, offset, data int) valueSlot {
	s := valueSlot{plan: p, offset: offset, data: data, faults: faultReasons(p), memo: new(memo)}
	s.format, s.size = chooseFormat(p)
	return s
}

// chooseFormat is the format of p's values, and for integers the bytes
// of them that count, decided as Plan.Format decides at each value.
func chooseFormat(p *symbols.Plan) (slotFormat, int) {
	switch p.Read.Kind {
	case symbols.ReadCString:
		return formatCString, 0
	case symbols.ReadNgxStr:
		return formatNgxStr, 0
	}
	if p.Type == nil {
		return formatPlan, 0
	}
	var f slotFormat
	switch t := symbols.Underlying(p.Type).(type) {
	case *dwarf.IntType, *dwarf.CharType:
		f = formatInt // Format's isSigned
	case *dwarf.UintType, *dwarf.UcharType, *dwarf.BoolType:
		f = formatUint
	case *dwarf.PtrType:
		if t.Type != nil {
			if st, ok := symbols.Underlying(t.Type).(*dwarf.StructType); ok && st.StructName == "sockaddr" {
				return formatPlan, 0 // a sockaddr when read as memory
			}
		}
		f = formatPointer
		if p.Read.BitSize > 0 {
			f = formatUint
		}
	default:
		return formatPlan, 0 // enums, char arrays and the rest
	}
	size := int(p.Type.Size())
	if p.Read.Kind == symbols.ReadMemory {
		size = min(size, p.Read.Size)
	}
	return f, size
}

// rawLen is the length of Value.Raw for the slot's header and data h,
// read without a fault.
func (s *valueSlot) rawLen(h []byte) int {
	n := min(int(binary.LittleEndian.Uint32(h[slotLen:])), s.data)
	if s.format == formatNgxStr {
		return 8 + s.strGot(h, n)
	}
	return n
}

// strGot is how many bytes of an ngx_str_t's data its slot holds: BPF
// left the length at data[0:8], the bytes from data[16:], and n is
// 16 plus the bytes copied.
func (s *valueSlot) strGot(h []byte, n int) int {
	strLen := binary.LittleEndian.Uint64(h[slotHeader:])
	return int(min(uint64(max(n-16, 0)), strLen))
}

// decodeOK sets v, a value read without a fault, from the slot's header
// and data h. Its raw bytes are appended to arena, which is returned.
func (s *valueSlot) decodeOK(v *Value, h []byte, arena []byte) []byte {
	n := min(int(binary.LittleEndian.Uint32(h[slotLen:])), s.data)
	raw := h[slotHeader : slotHeader+n]
	if s.format == formatNgxStr {
		// Raw is the length, then the data (Plan.Format's form).
		got := s.strGot(h, n)
		data := h[slotHeader+16 : slotHeader+16+got]
		at := len(arena)
		arena = append(append(arena, h[slotHeader:slotHeader+8]...), data...)
		v.Raw = arena[at:len(arena):len(arena)]
		s.formatString(v, data, binary.LittleEndian.Uint64(h[slotHeader:]) > uint64(got))
		return arena
	}
	if n > 0 {
		at := len(arena)
		arena = append(arena, raw...)
		v.Raw = arena[at:len(arena):len(arena)]
	}
	switch s.format {
	case formatCString:
		b := raw
		if i := bytes.IndexByte(b, 0); i >= 0 {
			b = b[:i]
		}
		s.formatString(v, b, len(b) >= s.plan.Read.Cap)
	case formatPlan:
		f := s.plan.Format(v.Raw)
		v.Text, v.JSON = f.Text, f.JSON
	default:
		s.formatInteger(v, raw)
	}
	return arena
}

// formatInteger sets the text and JSON of an integer or pointer value.
func (s *valueSlot) formatInteger(v *Value, raw []byte) {
	var buf [8]byte
	copy(buf[:], raw)
	x := binary.LittleEndian.Uint64(buf[:])
	if e := s.memo.last.Load(); e != nil && e.key == x {
		v.Text, v.JSON = e.text, e.json
		return
	}
	s.integer(v, x)
	s.memo.remember(x, "", false, v)
}

// integer sets the text and JSON of an integer or pointer value whose
// bytes, little-endian, are x.
func (s *valueSlot) integer(v *Value, x uint64) {
	signed := s.format == formatInt
	if r := &s.plan.Read; r.BitSize > 0 {
		x = (x >> r.BitOffset) & (uint64(1)<<r.BitSize - 1)
		if signed && x&(uint64(1)<<(r.BitSize-1)) != 0 {
			x |= ^uint64(0) << r.BitSize
		}
		if signed {
			v.Text, v.JSON = strconv.FormatInt(int64(x), 10), int64(x)
			return
		}
		v.Text, v.JSON = strconv.FormatUint(x, 10), x
		return
	}
	if s.size > 0 && s.size < 8 {
		x &= uint64(1)<<(8*s.size) - 1
	}
	switch s.format {
	case formatPointer:
		v.Text, v.JSON = pointerText(x), symbols.Pointer(x)
	case formatInt:
		sx := signExtend(x, s.size)
		v.Text, v.JSON = strconv.FormatInt(sx, 10), sx
	default:
		v.Text, v.JSON = strconv.FormatUint(x, 10), x
	}
}

// formatString sets the text and JSON of a string value.
func (s *valueSlot) formatString(v *Value, b []byte, truncated bool) {
	if e := s.memo.last.Load(); e != nil && e.truncated == truncated && e.str == string(b) {
		v.Text, v.JSON = e.text, e.json
		return
	}
	text, str := quote(b, truncated)
	v.Text, v.JSON = text, str
	key := maphash.String(memoSeed, str)
	if truncated {
		key = ^key
	}
	s.memo.remember(key, str, truncated, v)
}

// memo is a slot's memory of its last value: the text and JSON of a
// value are made (allocated) once, then reused as long as the slot reads
// the same value, and flags, statuses, a listening socket's pointer or a
// keepalive client's address repeat from hit to hit. A value is
// remembered when it is read twice in a row, so that values that never
// repeat (connection numbers across connections) cost no more than a
// compare. Layouts are shared by the goroutines that decode (tracers of
// --all-nginx), hence the atomics; an entry does not change once stored.
type memo struct {
	last atomic.Pointer[memoEntry]
	// seen is the key of the last value formatted.
	seen atomic.Uint64
}

type memoEntry struct {
	key uint64 // an integer's bytes; a string's hash
	// A string's JSON, and whether it was truncated.
	str       string
	truncated bool
	text      string
	json      any
}

// memoSeed seeds the hash of strings.
var memoSeed = maphash.MakeSeed()

// remember notes that v was formatted from the value of key (str and
// truncated for a string), and remembers it when it was the last value
// formatted too.
func (m *memo) remember(key uint64, str string, truncated bool, v *Value) {
	if m.seen.Swap(key) == key {
		m.last.Store(&memoEntry{key: key, str: str, truncated: truncated, text: v.Text, json: v.JSON})
	}
}

func signExtend(v uint64, size int) int64 {
	if size <= 0 || size >= 8 {
		return int64(v)
	}
	shift := 64 - 8*size
	return int64(v<<shift) >> shift
}

// pointerText is symbols.Pointer's String (%#x) in one allocation.
func pointerText(x uint64) string {
	if x == 0 {
		return "0x0"
	}
	var b [18]byte
	b[0], b[1] = '0', 'x'
	return string(strconv.AppendUint(b[:2], x, 16))
}

// quote is a string's text (strconv.Quote, then "..." when truncated)
// and JSON (the string). A string that quoting leaves alone, printable ASCII without
// a quote or backslash, takes one allocation: its JSON is the text
// between the quotes.
func quote(b []byte, truncated bool) (text, str string) {
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			str = string(b)
			text = strconv.Quote(str)
			if truncated {
				text += "..."
			}
			return text, str
		}
	}
	if truncated {
		text = "\"" + string(b) + "\"..."
	} else {
		text = "\"" + string(b) + "\""
	}
	return text, text[1 : 1+len(b)]
}
