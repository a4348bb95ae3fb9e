package lua

import (
	"encoding/binary"
	"strings"
	"testing"
)

// testLayout has the offsets of OpenResty's LuaJIT 2.1 (GC64) on amd64,
// as its DWARF gives them (checked against Find in e2e).
func testLayout() *Layout {
	l := &Layout{
		FuncFFID: 10, FuncPC: 32, FuncCF: 40, ProtoSize: 104,
		ProtoSizeBC: 12, ProtoChunkName: 64, ProtoFirstLine: 72, ProtoNumLine: 76, ProtoLineInfo: 80,
		StrLen: 20, StrSize: 24, MaxFrames: 8,
	}
	l.ProtoLo, l.ProtoHi = 12, 88
	return l
}

// recordBuilder writes a Lua section as the BPF walk does.
type recordBuilder struct {
	l   *Layout
	sec []byte
	n   int
}

func newRecord(l *Layout, state uint64) *recordBuilder {
	b := &recordBuilder{l: l, sec: make([]byte, l.Size())}
	b.sec[SecStatus] = byte(StatusOK)
	binary.LittleEndian.PutUint64(b.sec[SecState:], state)
	return b
}

// frame describes one frame record.
type frame struct {
	fn, link, pc   uint64
	ffid           byte
	cfunc          uint64
	bc             uint64 // a Lua function's bytecode
	sizebc         uint32
	first, numline uint32
	lineEntry      uint32 // lineinfo entry of pc (FlagLine when lineOK)
	lineOK         bool
	chunk          string // "" with sameChunk: FlagChunkSame
	sameChunk      bool
	chunkPtr       uint64
}

func (b *recordBuilder) add(f frame) {
	le := binary.LittleEndian
	rec := b.sec[SecFrameRecs+b.n*FrameSize:]
	b.n++
	b.sec[SecFrames] = byte(b.n)
	b.fill(rec, f)
	le.PutUint64(rec[FrFunc:], f.fn|0xfff8_0000_0000_0000) // itype bits above the pointer
	le.PutUint64(rec[FrLink:], f.link)
	rec[FrFlags] |= FlagFn
	rec[FrFn+b.l.FuncFFID] = f.ffid
	le.PutUint64(rec[FrFn+b.l.FuncPC:], f.bc)
	le.PutUint64(rec[FrFn+b.l.FuncCF:], f.cfunc)
}

// fill writes the proto part of a record (a frame's, or a trace's start).
func (b *recordBuilder) fill(rec []byte, f frame) {
	le := binary.LittleEndian
	le.PutUint64(rec[FrPC:], f.pc)
	if f.ffid != 0 || f.bc == 0 {
		return
	}
	rec[FrFlags] |= FlagProto
	p := rec[FrProto:]
	le.PutUint32(p[b.l.ProtoSizeBC-b.l.ProtoLo:], f.sizebc)
	le.PutUint64(p[b.l.ProtoChunkName-b.l.ProtoLo:], f.chunkPtr)
	le.PutUint32(p[b.l.ProtoFirstLine-b.l.ProtoLo:], f.first)
	le.PutUint32(p[b.l.ProtoNumLine-b.l.ProtoLo:], f.numline)
	if f.lineOK {
		rec[FrFlags] |= FlagLine
		noise := uint32(0xabcd_0000) // bytes past a 1- or 2-byte entry are the next entries
		if f.numline >= 65536 {
			noise = 0
		}
		le.PutUint32(rec[FrLine:], f.lineEntry|noise)
	}
	switch {
	case f.sameChunk:
		rec[FrFlags] |= FlagChunkSame
	case len(f.chunk) <= ChunkCap:
		rec[FrFlags] |= FlagChunk
		le.PutUint32(rec[FrChunkLen:], uint32(len(f.chunk)))
		copy(rec[FrChunk:], f.chunk)
	default:
		rec[FrFlags] |= FlagChunk
		le.PutUint32(rec[FrChunkLen:], uint32(len(f.chunk)))
		copy(rec[FrChunk:], f.chunk[:ChunkHead])
		copy(rec[FrChunk+ChunkHead:], f.chunk[len(f.chunk)-(ChunkCap-ChunkHead):])
	}
}

// Frame links: a Lua frame's is the return PC (the instruction after the
// call); others are a delta with their type in the low bits.
func luaLink(bc uint64, callPos int) uint64  { return bc + uint64(4*(callPos+1)) }
func deltaLink(slots int, typ uint64) uint64 { return uint64(8*slots) | typ }

func TestDecode(t *testing.T) {
	l := testLayout()
	const (
		exitBC  = 0x7000_0000_1000
		rejBC   = 0x7000_0000_2000
		checkBC = 0x7000_0000_3000
		mainBC  = 0x7000_0000_4000
		chunkA  = 0x7000_0000_9000
		chunkB  = 0x7000_0000_9100
	)
	b := newRecord(l, 0x5000)
	// ffi_meta___call, called by exit.lua's line 52 (pos 7).
	b.add(frame{fn: 0x6000_0000_0100, ffid: 178, link: luaLink(exitBC, 7)})
	// exit.lua (firstline 44, numline 20: byte entries).
	b.add(frame{fn: 0x6000_0000_0200, bc: exitBC, pc: luaLink(exitBC, 7), sizebc: 30, first: 44, numline: 20, lineEntry: 8, lineOK: true,
		chunk: "@/usr/share/lua/5.1/resty/core/exit.lua", chunkPtr: chunkA, link: luaLink(rejBC, 3)})
	// reject, in auth.lua; its caller check shares its chunk.
	b.add(frame{fn: 0x6000_0000_0300, bc: rejBC, pc: luaLink(rejBC, 3), sizebc: 10, first: 3, numline: 3, lineEntry: 2, lineOK: true,
		chunk: "@/etc/nginx/lua/auth.lua", chunkPtr: chunkB, link: luaLink(checkBC, 5)})
	b.add(frame{fn: 0x6000_0000_0400, bc: checkBC, pc: luaLink(checkBC, 5), sizebc: 12, first: 8, numline: 300, lineEntry: 2, lineOK: true,
		sameChunk: true, chunkPtr: chunkB, link: luaLink(mainBC, 1)})
	// The main chunk, a vararg function: its varg frame, then its real
	// frame, entered from C (lua_resume: FRAME_CP).
	b.add(frame{fn: 0x6000_0000_0500, bc: mainBC, pc: luaLink(mainBC, 1), sizebc: 4, first: 0, numline: 3, lineEntry: 3, lineOK: true,
		chunk: "=access_by_lua(nginx.conf:58)", chunkPtr: 0x7000_0000_9200, link: deltaLink(3, frameVarg)})
	b.add(frame{fn: 0x6000_0000_0500, bc: mainBC, pc: 0, sizebc: 4, first: 0, numline: 3,
		sameChunk: true, link: deltaLink(2, frameCP)})

	st := l.Decode(b.sec)
	want := []string{
		"[builtin#178]:",
		"/usr/share/lua/5.1/resty/core/exit.lua:52: in function </usr/share/lua/5.1/resty/core/exit.lua:44>",
		"/etc/nginx/lua/auth.lua:5: in function </etc/nginx/lua/auth.lua:3>",
		"/etc/nginx/lua/auth.lua:10: in function </etc/nginx/lua/auth.lua:8>",
		"access_by_lua(nginx.conf:58):3: in main chunk",
	}
	var got []string
	for _, f := range st.Frames {
		got = append(got, f.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("frames:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st.Status != StatusOK || st.Truncated || st.Trace != nil || st.Suspended {
		t.Errorf("status %v, truncated %v, trace %v, suspended %v", st.Status, st.Truncated, st.Trace, st.Suspended)
	}
	if len(st.Frames) == 5 && !st.Frames[4].Entry {
		t.Errorf("the main chunk's varg frame lost the C entry of its real frame")
	}
	// Callers, for names: exit.lua's caller is reject at pos 3.
	if cs := st.Frames[1].Caller; cs == nil || cs.Proto != rejBC-uint64(l.ProtoSize) || cs.ReturnPC != luaLink(rejBC, 3) || cs.FirstLine != 3 || cs.ChunkName != chunkB {
		t.Errorf("exit.lua's caller: %+v", cs)
	}
	if cs := st.Frames[4].Caller; cs != nil {
		t.Errorf("the main chunk, entered from C, has a Lua caller %+v", cs)
	}
	if f, ok := st.Where(); !ok || f.Where() != "/etc/nginx/lua/auth.lua:5" {
		t.Errorf("Where: %v %v, want auth.lua:5 (not resty.core's exit.lua)", f.Where(), ok)
	}
}

func TestDecodeLineWidths(t *testing.T) {
	l := testLayout()
	for _, c := range []struct {
		numline, entry uint32
		wantLine       int
	}{
		{200, 0x12, 1 + 0x12},
		{300, 0x1234, 1 + 0x1234},
		{70000, 0x12345, 1 + 0x12345},
	} {
		b := newRecord(l, 1)
		const bc = 0x7000_0000_1000
		b.add(frame{fn: 0x100, ffid: 1, link: luaLink(bc, 4)})
		b.add(frame{fn: 0x200, bc: bc, pc: luaLink(bc, 4), sizebc: 9, first: 1, numline: c.numline, lineEntry: c.entry, lineOK: true, chunk: "@x.lua", chunkPtr: 1, link: deltaLink(2, frameC)})
		st := l.Decode(b.sec)
		if len(st.Frames) != 2 || st.Frames[1].Line != c.wantLine {
			t.Errorf("numline %d: frames %+v, want line %d", c.numline, st.Frames, c.wantLine)
		}
	}
}

func TestDecodeTraceAndTruncation(t *testing.T) {
	l := testLayout()
	b := newRecord(l, 1)
	le := binary.LittleEndian
	const startBC = 0x7000_0000_1000
	le.PutUint32(b.sec[SecVMState:], 7)
	le.PutUint64(b.sec[SecTrace:], 0xdead_0000)
	rec := b.sec[SecTraceRec:]
	le.PutUint64(rec[FrFn:], startBC) // a trace's record holds the bytecode start here
	b.fill(rec, frame{bc: startBC, pc: startBC + 4*5, sizebc: 20, first: 10, numline: 9, lineEntry: 4, lineOK: true, chunk: "@/a/b/loop.lua", chunkPtr: 0x9000})
	for range l.MaxFrames {
		b.add(frame{fn: 0x200, bc: startBC, sizebc: 20, first: 10, numline: 9, sameChunk: true, link: luaLink(startBC, 2)})
	}
	b.sec[SecFlags] |= SecTruncated
	st := l.Decode(b.sec)
	if st.Trace == nil || st.Trace.Number != 7 || st.Trace.Start.Where() != "/a/b/loop.lua:14" {
		t.Fatalf("trace %+v, want trace 7 starting at loop.lua:14", st.Trace)
	}
	if !st.Truncated || len(st.Frames) != l.MaxFrames {
		t.Errorf("truncated %v with %d frames, want true with %d", st.Truncated, len(st.Frames), l.MaxFrames)
	}
	// The frames share the trace start's chunk name (FlagChunkSame).
	if st.Frames[0].Source != "@/a/b/loop.lua" || st.Frames[0].Line != 0 {
		t.Errorf("first frame %+v: want loop.lua with no line (its PC is unknown)", st.Frames[0])
	}
}

func TestDecodeStatus(t *testing.T) {
	l := testLayout()
	sec := make([]byte, l.Size())
	sec[SecStatus] = byte(StatusIdle)
	if st := l.Decode(sec); st.Status != StatusIdle || len(st.Frames) != 0 {
		t.Errorf("idle: %+v", st)
	}
	sec[SecStatus], sec[SecStep] = byte(StatusFault), 9
	if st := l.Decode(sec); st.Why != "reading cur_L failed" {
		t.Errorf("fault: %q", st.Why)
	}
	if st := l.Decode(sec[:10]); st.Why == "" || len(st.Frames) != 0 {
		t.Errorf("short record: %+v", st)
	}
}

func TestShortSource(t *testing.T) {
	long := "@/" + strings.Repeat("d/", 40) + "auth.lua"
	for _, c := range []struct{ in, want string }{
		{"=access_by_lua(nginx.conf:58)", "access_by_lua(nginx.conf:58)"},
		{"@/etc/nginx/lua/auth.lua", "/etc/nginx/lua/auth.lua"},
		{long, "..." + long[len(long)-56:]},
		{"local x = 1", `[string "local x = 1"]`},
		{"", "?"},
	} {
		if got := ShortSource(c.in); got != c.want {
			t.Errorf("ShortSource(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	// A name longer than the copy keeps its head and its tail.
	rec := make([]byte, FrameSize)
	b := &recordBuilder{l: testLayout()}
	b.fill(rec, frame{bc: 1, chunk: long, chunkPtr: 1})
	if got := ShortSource(chunkName(rec)); got != "..."+long[len(long)-56:] {
		t.Errorf("long chunk name: %q", got)
	}
}

func TestIsRestyCore(t *testing.T) {
	for src, want := range map[string]bool{
		"@/usr/share/lua/5.1/resty/core/exit.lua": true,
		"@/usr/share/lua/5.1/resty/core.lua":      true,
		"@/usr/share/lua/5.1/ngx/ssl.lua":         true,
		"@/etc/nginx/lua/auth.lua":                false,
		"=access_by_lua(nginx.conf:58)":           false,
		"@/usr/share/lua/5.1/resty/lrucache.lua":  false,
	} {
		if got := IsRestyCore(src); got != want {
			t.Errorf("IsRestyCore(%q) = %v", src, got)
		}
	}
}

// FuzzDecode: the Lua section is bytes a hostile process shapes (frame
// links, proto members, chunk names); decoding never panics and stays
// within the frames the walk copied.
func FuzzDecode(f *testing.F) {
	l := testLayout()
	b := newRecord(l, 0x5000)
	const bc = 0x7000_0000_1000
	b.add(frame{fn: 0x100, ffid: 178, link: luaLink(bc, 7)})
	b.add(frame{fn: 0x200, bc: bc, pc: luaLink(bc, 7), sizebc: 30, first: 44, numline: 20, lineEntry: 8, lineOK: true, chunk: "@x.lua", chunkPtr: 1, link: deltaLink(3, frameVarg)})
	f.Add(b.sec)
	f.Add(make([]byte, 10))
	f.Fuzz(func(t *testing.T, sec []byte) {
		st := l.Decode(sec)
		if len(st.Frames) > l.MaxFrames {
			t.Fatalf("%d frames from a walk of %d", len(st.Frames), l.MaxFrames)
		}
		for _, fr := range st.Frames {
			_ = fr.String()
			_ = fr.Where()
		}
		st.Where()
	})
}
