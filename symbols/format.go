package symbols

import (
	"bytes"
	"debug/dwarf"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
)

// Formatted is a value decoded from the bytes a plan read.
type Formatted struct {
	Text string // for text output
	JSON any    // int64, uint64, string or Pointer, for JSON output
}

// Pointer is the JSON value of a pointer. It prints, and marshals to
// JSON, as a hexadecimal string ("0x55d0a3c4e010", "0x0"), and tells a
// null pointer without parsing: p == 0.
type Pointer uint64

// String is the pointer in hexadecimal with 0x, as %#x prints it.
func (p Pointer) String() string { return fmt.Sprintf("%#x", uint64(p)) }

// MarshalJSON writes the pointer as a JSON string: "0x55d0a3c4e010".
func (p Pointer) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// Format decodes the bytes read by the plan according to its DWARF type.
// For ReadNgxStr, raw is the 8-byte length followed by the data read.
func (p *Plan) Format(raw []byte) Formatted {
	switch p.Read.Kind {
	case ReadCString:
		if i := bytes.IndexByte(raw, 0); i >= 0 {
			raw = raw[:i]
		}
		return quoted(raw, len(raw) >= p.Read.Cap)
	case ReadNgxStr:
		if len(raw) < 8 {
			return Formatted{Text: "?", JSON: nil}
		}
		n := binary.LittleEndian.Uint64(raw)
		data := raw[8:]
		if uint64(len(data)) > n {
			data = data[:n]
		}
		return quoted(data, n > uint64(len(data)))
	}
	u := Underlying(p.Type)
	if isSockaddrPointer(u) && p.Read.Kind == ReadMemory {
		return formatSockaddr(raw)
	}
	if a, ok := u.(*dwarf.ArrayType); ok && isChar(a.Type) {
		if i := bytes.IndexByte(raw, 0); i >= 0 {
			raw = raw[:i]
		}
		return quoted(raw, false)
	}
	var buf [8]byte
	copy(buf[:], raw)
	v := binary.LittleEndian.Uint64(buf[:])
	size := int(p.Type.Size())
	if p.Read.Kind == ReadMemory {
		size = min(size, p.Read.Size)
	}
	if p.Read.BitSize > 0 {
		v = (v >> p.Read.BitOffset) & (1<<p.Read.BitSize - 1)
		if isSigned(u) && v&(1<<(p.Read.BitSize-1)) != 0 {
			v |= ^uint64(0) << p.Read.BitSize
		}
		if isSigned(u) {
			return Formatted{Text: strconv.FormatInt(int64(v), 10), JSON: int64(v)}
		}
		return Formatted{Text: strconv.FormatUint(v, 10), JSON: v}
	}
	if size > 0 && size < 8 {
		v &= 1<<(8*size) - 1
	}
	switch t := u.(type) {
	case *dwarf.PtrType:
		return Formatted{Text: Pointer(v).String(), JSON: Pointer(v)}
	case *dwarf.EnumType:
		sv := signExtend(v, size)
		for _, e := range t.Val {
			if e.Val == sv {
				return Formatted{Text: e.Name, JSON: e.Name}
			}
		}
		return Formatted{Text: strconv.FormatInt(sv, 10), JSON: sv}
	}
	if isSigned(u) {
		sv := signExtend(v, size)
		return Formatted{Text: strconv.FormatInt(sv, 10), JSON: sv}
	}
	return Formatted{Text: strconv.FormatUint(v, 10), JSON: v}
}

func signExtend(v uint64, size int) int64 {
	if size <= 0 || size >= 8 {
		return int64(v)
	}
	shift := 64 - 8*size
	return int64(v<<shift) >> shift
}

func isSigned(t dwarf.Type) bool {
	switch t.(type) {
	case *dwarf.IntType, *dwarf.CharType:
		return true
	}
	return false
}

func quoted(b []byte, truncated bool) Formatted {
	s := strconv.Quote(string(b))
	if truncated {
		s += "..."
	}
	return Formatted{Text: s, JSON: string(b)}
}

const (
	afUnix  = 1
	afInet  = 2
	afInet6 = 10
)

func formatSockaddr(raw []byte) Formatted {
	if len(raw) < 2 {
		return Formatted{Text: "?"}
	}
	var s string
	switch binary.LittleEndian.Uint16(raw) {
	case afInet:
		if len(raw) >= 8 {
			ip := netip.AddrFrom4([4]byte(raw[4:8]))
			s = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(raw[2:])).String()
		}
	case afInet6:
		if len(raw) >= 24 {
			ip := netip.AddrFrom16([16]byte(raw[8:24]))
			s = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(raw[2:])).String()
		}
	case afUnix:
		path := raw[2:]
		if i := bytes.IndexByte(path, 0); i >= 0 {
			path = path[:i]
		}
		s = "unix:" + string(path)
	default:
		s = fmt.Sprintf("family %d", binary.LittleEndian.Uint16(raw))
	}
	return Formatted{Text: s, JSON: s}
}
