package probes

import (
	"debug/dwarf"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// oldDecode is layout.decode as it was before it chose each slot's
// formatter at layout time (#18): the reference the differential tests
// compare the decoder with.
func oldDecode(l layout, rec []byte) ([]Value, error) {
	if len(rec) < l.size {
		return nil, fmt.Errorf("event of %d bytes, want %d", len(rec), l.size)
	}
	out := make([]Value, len(l.slots))
	for i, s := range l.slots {
		v := Value{Expr: s.plan.Expr}
		h := rec[s.offset:]
		switch h[slotStatus] {
		case statusOK:
			n := int(binary.LittleEndian.Uint32(h[slotLen:]))
			n = min(n, s.data)
			raw := h[slotHeader : slotHeader+n]
			if s.plan.Read.Kind == symbols.ReadNgxStr {
				strLen := binary.LittleEndian.Uint64(raw)
				got := min(uint64(n-16), strLen)
				raw = append(append([]byte(nil), raw[:8]...), h[slotHeader+16:slotHeader+16+int(got)]...)
			}
			v.Readable = true
			v.Raw = append([]byte(nil), raw...)
			f := s.plan.Format(v.Raw)
			v.Text, v.JSON = f.Text, f.JSON
		case statusFault:
			v.Why = oldFaultReason(s.plan, int(h[slotStep]))
			v.Text = "<unreadable>"
		case statusUnavailable:
			v.Why = s.plan.Root.Unavailable
			v.Text = "<unavailable>"
		default:
			v.Why = "no entry event for this return (attached mid-call)"
			v.Text = "<unknown>"
		}
		out[i] = v
	}
	return out, nil
}

func oldFaultReason(p *symbols.Plan, step int) string {
	if step < len(p.Loads) {
		return fmt.Sprintf("pointer load %d of %d faulted (NULL or unmapped)", step+1, len(p.Loads))
	}
	return "final read faulted (NULL or unmapped)"
}

// Types beyond codegen_test's u64 and u32, one of each kind Format
// tells apart.
var (
	i64      = &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "long"}}}
	i32      = &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 4, Name: "int"}}}
	i16      = &dwarf.IntType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 2, Name: "short"}}}
	u16      = &dwarf.UintType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 2, Name: "unsigned short"}}}
	schar    = &dwarf.CharType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 1, Name: "char"}}}
	uchar    = &dwarf.UcharType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 1, Name: "unsigned char"}}}
	boolT    = &dwarf.BoolType{BasicType: dwarf.BasicType{CommonType: dwarf.CommonType{ByteSize: 1, Name: "_Bool"}}}
	ngxInt   = &dwarf.TypedefType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "ngx_int_t"}, Type: i64}
	ngxUint  = &dwarf.TypedefType{CommonType: dwarf.CommonType{ByteSize: 8, Name: "ngx_uint_t"}, Type: u64}
	constI32 = &dwarf.QualType{CommonType: dwarf.CommonType{ByteSize: 4}, Qual: "const", Type: i32}
	connT    = &dwarf.StructType{CommonType: dwarf.CommonType{ByteSize: 240}, StructName: "ngx_connection_s", Kind: "struct"}
	connPtr  = &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: connT}
	voidPtr  = &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}}
	sockT    = &dwarf.StructType{CommonType: dwarf.CommonType{ByteSize: 16}, StructName: "sockaddr", Kind: "struct"}
	sockPtr  = &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: &dwarf.TypedefType{CommonType: dwarf.CommonType{ByteSize: 16, Name: "sockaddr_t"}, Type: sockT}}
	enumT    = &dwarf.EnumType{CommonType: dwarf.CommonType{ByteSize: 4}, EnumName: "ngx_state", Val: []*dwarf.EnumValue{{Name: "NGX_A", Val: 0}, {Name: "NGX_B", Val: 1}, {Name: "NGX_NEG", Val: -2}}}
	charArr  = &dwarf.ArrayType{CommonType: dwarf.CommonType{ByteSize: 16}, Type: schar, Count: 16}
	u32Arr   = &dwarf.ArrayType{CommonType: dwarf.CommonType{ByteSize: 16}, Type: u32, Count: 4}
	structT  = &dwarf.StructType{CommonType: dwarf.CommonType{ByteSize: 8}, StructName: "pair", Kind: "struct"}
	charPtr  = &dwarf.PtrType{CommonType: dwarf.CommonType{ByteSize: 8}, Type: schar}
)

// diffPlans has a plan for each way a value is formatted: integers of
// each size and sign, typedefs and qualifiers, bitfields signed and not,
// pointers, sockaddrs read and not, enums, char arrays, C and nginx
// strings, and plans with several loads (to fault at each step).
func diffPlans() []*symbols.Plan {
	mem := func(size int) symbols.Read { return symbols.Read{Kind: symbols.ReadMemory, Offset: 16, Size: size} }
	val := symbols.Read{Kind: symbols.ReadValue, Size: 8}
	bits := func(off, n int) symbols.Read {
		return symbols.Read{Kind: symbols.ReadMemory, Offset: 9, Size: (off + n + 7) / 8, BitOffset: off, BitSize: n}
	}
	rdi := symbols.Root{Reg: symbols.RegRDI}
	two := []int64{8, 16}
	return []*symbols.Plan{
		{Expr: "rc", Type: ngxInt, Root: rdi, Read: val},
		{Expr: "r->headers_out.status", Type: ngxUint, Root: rdi, Loads: []int64{8}, Read: mem(8)},
		{Expr: "i32", Type: i32, Root: rdi, Loads: two, Read: mem(4)},
		{Expr: "const i32", Type: constI32, Root: rdi, Read: mem(4)},
		{Expr: "i16", Type: i16, Root: rdi, Read: mem(2)},
		{Expr: "u16", Type: u16, Root: rdi, Read: mem(2)},
		{Expr: "i32 read as 2", Type: i32, Root: rdi, Read: mem(2)},
		{Expr: "char", Type: schar, Root: rdi, Read: mem(1)},
		{Expr: "uchar", Type: uchar, Root: rdi, Read: mem(1)},
		{Expr: "bool", Type: boolT, Root: rdi, Read: mem(1)},
		{Expr: "u32 value", Type: u32, Root: rdi, Read: val},
		{Expr: "i32 value", Type: i32, Root: rdi, Read: val},
		{Expr: "c->read->eof", Type: u32, Root: rdi, Loads: two, Read: bits(0, 1)},
		{Expr: "u bits", Type: u32, Root: rdi, Read: bits(3, 5)},
		{Expr: "i bits", Type: i32, Root: rdi, Read: bits(2, 7)},
		{Expr: "i bit", Type: i32, Root: rdi, Read: bits(7, 1)},
		{Expr: "wide bits", Type: u64, Root: rdi, Read: bits(5, 40)},
		{Expr: "c->listening", Type: connPtr, Root: rdi, Loads: []int64{8, 16, 24}, Read: mem(8)},
		{Expr: "void *", Type: voidPtr, Root: rdi, Read: val},
		{Expr: "c->sockaddr", Type: sockPtr, Root: rdi, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Size: 28}},
		{Expr: "sockaddr value", Type: sockPtr, Root: rdi, Read: val},
		{Expr: "state", Type: enumT, Root: rdi, Read: mem(4)},
		{Expr: "name[16]", Type: charArr, Root: rdi, Read: mem(16)},
		{Expr: "u32[4]", Type: u32Arr, Root: rdi, Read: mem(16)},
		{Expr: "pair", Type: structT, Root: rdi, Read: mem(8)},
		{Expr: "r->request_line", Type: u64, Root: rdi, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadNgxStr, Offset: 120, Cap: symbols.StringCap}},
		{Expr: "short ngx_str", Type: u64, Root: rdi, Read: symbols.Read{Kind: symbols.ReadNgxStr, Cap: 5}},
		{Expr: "name", Type: charPtr, Root: rdi, Loads: two, Read: symbols.Read{Kind: symbols.ReadCString, Cap: symbols.StringCap}},
		{Expr: "short name", Type: charPtr, Root: rdi, Read: symbols.Read{Kind: symbols.ReadCString, Cap: 3}},
		unavailablePlan(),
	}
}

// diffLayouts are the layouts the differential tests decode: the
// probes' test layouts, the plans above, and aggregation keys.
func diffLayouts() map[string]layout {
	agg := keyLayout(diffPlans())
	shifted := agg
	shifted.slots = append([]valueSlot(nil), agg.slots...)
	for i := range shifted.slots {
		shifted.slots[i].offset += headerSize
	}
	shifted.size += headerSize
	return map[string]layout{
		"test":        newLayout(testPlans()),
		"return":      newLayout(returnPlans()),
		"unavailable": newLayout([]*symbols.Plan{unavailablePlan(), testPlans()[0]}),
		"diff":        newLayout(diffPlans()),
		"diff+stack":  newLayout(diffPlans()).withStack(DefaultStackBytes),
		"aggregate":   shifted,
		"request":     requestLayout(),
	}
}

// Bytes the string generator draws from: printable ASCII, the quote and
// backslash that strconv.Quote escapes, controls, NUL, UTF-8 and bytes
// that are not.
var stringBytes = []byte("GET /index.html?q=1 HTTP/1.1 \"\\\t\n\x00\x01\x7f\x80\xff\xc3\xa9\xe2\x82\xac")

// randomRecord fills a record for l: every status, lengths over and
// under the slot's capacity, and string lengths beyond what was copied.
func randomRecord(r *rand.Rand, l layout) []byte {
	rec := make([]byte, l.size)
	for i := range rec {
		rec[i] = byte(r.Uint32())
	}
	for _, s := range l.slots {
		h := rec[s.offset:]
		switch p := r.IntN(10); {
		case p < 6:
			h[slotStatus] = statusOK
		case p < 8:
			h[slotStatus] = statusFault
			h[slotStep] = byte(r.IntN(len(s.plan.Loads) + 3))
			if r.IntN(4) == 0 {
				h[slotStep] = byte(r.Uint32())
			}
		case p < 9:
			h[slotStatus] = statusUnavailable
		default:
			h[slotStatus] = byte(2 + 2*r.IntN(3)) // statusNoEntry, or unknown
		}
		n := s.data
		switch r.IntN(4) {
		case 0:
			n = r.IntN(s.data + 1)
		case 1:
			n = s.data + 1 + r.IntN(100)
		}
		if s.plan.Read.Kind == symbols.ReadNgxStr && n < 16 {
			n = 16 + r.IntN(s.data-15) // BPF writes 16 + the bytes copied
		}
		binary.LittleEndian.PutUint32(h[slotLen:], uint32(n))
		data := h[slotHeader : slotHeader+s.data]
		switch s.plan.Read.Kind {
		case symbols.ReadCString, symbols.ReadNgxStr:
			at := 0
			if s.plan.Read.Kind == symbols.ReadNgxStr {
				at = 16
				strLen := uint64(r.IntN(s.data))
				switch r.IntN(5) {
				case 0:
					strLen = r.Uint64()
				case 1:
					strLen = 0
				}
				binary.LittleEndian.PutUint64(data, strLen)
			}
			printable := r.IntN(2) == 0
			for i := at; i < len(data); i++ {
				if printable {
					data[i] = byte(0x20 + r.IntN(0x5f))
				} else {
					data[i] = stringBytes[r.IntN(len(stringBytes))]
				}
			}
			if s.plan.Read.Kind == symbols.ReadCString && r.IntN(2) == 0 && len(data) > 0 {
				data[r.IntN(len(data))] = 0
			}
		default:
			switch r.IntN(4) {
			case 0: // small values, the common case
				binary.LittleEndian.PutUint64(data, uint64(r.IntN(300)))
			case 1: // sockaddrs
				fam := []uint16{1, 2, 10, 3}[r.IntN(4)]
				binary.LittleEndian.PutUint16(data, fam)
			case 2:
				binary.LittleEndian.PutUint64(data, 0)
			}
		}
	}
	return rec
}

// The decoder decodes every record as the old one did: the same Expr,
// Readable, Why, Raw, Text and JSON (value and type), over the probes'
// test layouts, every formatter and every slot status.
func TestDecodeMatchesOld(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 2))
	for name, l := range diffLayouts() {
		// A buffer reused across records and layouts, as the tracer
		// reuses one across its probes.
		var buf DecodeBuffer
		small := newLayout(testPlans()[:2])
		for i := range 3000 {
			rec := randomRecord(r, l)
			compareDecode(t, fmt.Sprintf("%s #%d", name, i), l, rec, nil)
			compareDecode(t, fmt.Sprintf("%s #%d in a buffer", name, i), l, rec, &buf)
			if i%7 == 0 {
				compareDecode(t, fmt.Sprintf("%s #%d, small", name, i), small, randomRecord(r, small), &buf)
			}
		}
		// Records that repeat, as values repeat from hit to hit: the
		// slots remember values and must give them back unchanged.
		pool := make([][]byte, 4)
		for i := range pool {
			pool[i] = randomRecord(r, l)
		}
		for i := range 2000 {
			j := r.IntN(len(pool))
			if i%3 == 0 {
				j = 0
			}
			compareDecode(t, fmt.Sprintf("%s repeated #%d (record %d)", name, i, j), l, pool[j], &buf)
		}
		compareDecode(t, name+" short", l, make([]byte, l.size-1), nil)
	}
}

// compareDecode decodes rec with the old decoder and the new, into buf
// when it is not nil, and fails unless the values are the same.
func compareDecode(t *testing.T, what string, l layout, rec []byte, buf *DecodeBuffer) {
	t.Helper()
	want, wantErr := oldDecode(l, rec)
	got, err := l.decodeInto(rec, buf)
	if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
		t.Fatalf("%s: error %v, want %v", what, err, wantErr)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%s: value %d (%s):\n got %#v\nwant %#v", what, i, want[i].Expr, got[i], want[i])
		}
	}
}

// A slot remembers a value read twice in a row: the third time, its
// text and JSON are the ones made the second time, not new ones.
func TestDecodeRemembers(t *testing.T) {
	l := requestLayout()
	rec := requestRecord(l, 1234)
	var first []Value
	for i := range 3 {
		vals, err := l.decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			first = vals
		}
		if i == 2 {
			for j, v := range vals {
				if v.Text != first[j].Text || v.JSON != first[j].JSON {
					t.Fatalf("value %d: %#v, then %#v", j, first[j], v)
				}
			}
		}
	}
	var buf DecodeBuffer
	if allocs := testing.AllocsPerRun(100, func() { _, _ = l.decodeInto(rec, &buf) }); allocs != 0 {
		t.Errorf("decoding a repeated record into a buffer allocates %v times, want 0", allocs)
	}
}

// Decoded values do not share memory with the record: the caller may
// reuse it.
func TestDecodeCopiesRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(18, 3))
	l := newLayout(diffPlans())
	for range 200 {
		rec := randomRecord(r, l)
		want, _ := oldDecode(l, rec)
		got, _ := l.decode(rec)
		for i := range rec {
			rec[i] ^= 0xa5
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("value %d changed with the record:\n got %#v\nwant %#v", i, got[i], want[i])
			}
		}
	}
}

// Sessions may decode in several goroutines (and --all-nginx runs one
// per master); the decoder's per-slot state must allow it (go test -race).
func TestDecodeConcurrent(t *testing.T) {
	l := newLayout(diffPlans())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(18, uint64(g)))
			for i := range 300 {
				compareDecode(t, fmt.Sprintf("goroutine %d #%d", g, i), l, randomRecord(r, l), nil)
			}
		}()
	}
	wg.Wait()
}

// requestLayout is shaped like the default set's request event: 24
// values, two strings, 22 numbers, flags and pointers, 11 of them past
// an upstream that does not exist.
func requestLayout() layout {
	rdi := symbols.Root{Reg: symbols.RegRDI}
	str := symbols.Read{Kind: symbols.ReadNgxStr, Offset: 120, Cap: symbols.StringCap}
	plans := []*symbols.Plan{
		{Expr: "rc", Type: ngxInt, Root: symbols.Root{Reg: symbols.RegRSI}, Read: symbols.Read{Kind: symbols.ReadValue, Size: 8}},
		{Expr: "r->headers_out.status", Type: ngxUint, Root: rdi, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 600, Size: 8}},
		{Expr: "r->connection->addr_text", Type: u64, Root: rdi, Loads: []int64{8}, Read: str},
		{Expr: "r->request_line", Type: u64, Root: rdi, Read: str},
		{Expr: "r->connection->number", Type: u64, Root: rdi, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 200, Size: 8}},
		{Expr: "r->connection->listening", Type: connPtr, Root: rdi, Loads: []int64{8}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 40, Size: 8}},
	}
	flag := func(expr string, loads []int64, bit int) *symbols.Plan {
		return &symbols.Plan{Expr: expr, Type: u32, Root: rdi, Loads: loads, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 9, Size: 1, BitOffset: bit, BitSize: 1}}
	}
	for i := range 8 {
		plans = append(plans, flag(fmt.Sprintf("client flag %d", i), []int64{8, 16}, i%4))
	}
	plans = append(plans,
		&symbols.Plan{Expr: "r->upstream->peer.connection->number", Type: u64, Root: rdi, Loads: []int64{8, 16}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 200, Size: 8}},
		&symbols.Plan{Expr: "r->upstream->peer.connection->listening", Type: connPtr, Root: rdi, Loads: []int64{8, 16}, Read: symbols.Read{Kind: symbols.ReadMemory, Offset: 40, Size: 8}})
	for i := range 8 {
		plans = append(plans, flag(fmt.Sprintf("upstream flag %d", i), []int64{8, 16, 24}, i%4))
	}
	return newLayout(plans)
}

// requestRecord is a healthy request's record for requestLayout: no
// upstream, so the last ten values fault at their first load.
func requestRecord(l layout, number uint64) []byte {
	rec := make([]byte, l.size)
	put := func(i int, data []byte) {
		h := rec[l.slots[i].offset:]
		h[slotStatus] = statusOK
		binary.LittleEndian.PutUint32(h[slotLen:], uint32(len(data)))
		copy(h[slotHeader:], data)
	}
	u := func(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
	str := func(s string) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(s)))
		b = binary.LittleEndian.AppendUint64(b, 0x55d0a3c4f000)
		return append(b, s...)
	}
	put(0, u(0))
	put(1, u(200))
	put(2, str("127.0.0.1"))
	put(3, str("GET / HTTP/1.1"))
	put(4, u(number))
	put(5, u(0x55d0a3c4e010))
	for i := 6; i < 14; i++ {
		put(i, []byte{0})
	}
	for i := 14; i < len(l.slots); i++ {
		h := rec[l.slots[i].offset:]
		h[slotStatus] = statusFault
		h[slotStep] = 1
	}
	return rec
}

// BenchmarkDecode decodes request events, each with its own connection
// number, as the tracer does.
func BenchmarkDecode(b *testing.B) {
	l := requestLayout()
	recs := make([][]byte, 64)
	for i := range recs {
		recs[i] = requestRecord(l, uint64(1000+i))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.decode(recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeInto is BenchmarkDecode reusing a DecodeBuffer, as the
// tracer does.
func BenchmarkDecodeInto(b *testing.B) {
	l := requestLayout()
	recs := make([][]byte, 64)
	for i := range recs {
		recs[i] = requestRecord(l, uint64(1000+i))
	}
	var buf DecodeBuffer
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := l.decodeInto(recs[i%len(recs)], &buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeOld is BenchmarkDecode with the old decoder.
func BenchmarkDecodeOld(b *testing.B) {
	l := requestLayout()
	recs := make([][]byte, 64)
	for i := range recs {
		recs[i] = requestRecord(l, uint64(1000+i))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := oldDecode(l, recs[i%len(recs)]); err != nil {
			b.Fatal(err)
		}
	}
}
