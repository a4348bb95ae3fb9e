package watch_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/watch"
)

// Fields of ngx_event_t as nginx 1.22 lays them out on x86-64 (the unit
// tests use no binary; the nginx tests read them from DWARF).
var (
	eof      = watch.FieldRef{Type: "ngx_event_t", Member: "eof", Offset: 9, BitOffset: 0, BitSize: 1, Bitfield: true}
	errBit   = watch.FieldRef{Type: "ngx_event_t", Member: "error", Offset: 9, BitOffset: 1, BitSize: 1, Bitfield: true}
	timedout = watch.FieldRef{Type: "ngx_event_t", Member: "timedout", Offset: 9, BitOffset: 2, BitSize: 1, Bitfield: true}
)

const pc0 = 0x401000

func code(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scan(t *testing.T, hexCode string, f watch.FieldRef) ([]watch.Site, watch.Stats) {
	t.Helper()
	sites, st, err := watch.ScanCode(code(t, hexCode), pc0, f, &watch.Options{KeepNoEffect: true})
	if err != nil {
		t.Fatal(err)
	}
	return sites, st
}

type apply struct{ old, src, want uint64 }

// The encodings are GNU as output for the instruction in the comment.
func TestInstructionForms(t *testing.T) {
	noConst := ^uint64(0)
	tests := []struct {
		name   string
		code   string
		field  watch.FieldRef
		kind   watch.Kind
		konst  uint64 // the field's value after, when static; noConst otherwise
		base   int
		index  int
		scale  uint8
		disp   int64
		size   int
		srcReg int
		shift  uint8
		text   string
		apply  []apply
	}{
		{name: "orb $0x1,0x9(%rbx)", code: "804b0901", field: eof, kind: watch.SetBits, konst: 1, base: 3, index: -1, disp: 9, size: 1, srcReg: -1, text: "orb $0x1,0x9(%rbx)", apply: []apply{{0, 0, 1}, {1, 0, 1}}},
		{name: "orb $0x2 misses eof", code: "804b0902", field: eof, kind: watch.NoEffect, konst: noConst, base: 3, index: -1, disp: 9, size: 1, srcReg: -1, apply: []apply{{0, 0, 0}, {1, 0, 1}}},
		{name: "orb $0x2 sets error", code: "804b0902", field: errBit, kind: watch.SetBits, konst: 1, base: 3, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "andb $0xfe,0x9(%rax)", code: "806009fe", field: eof, kind: watch.ClearBits, konst: 0, base: 0, index: -1, disp: 9, size: 1, srcReg: -1, apply: []apply{{1, 0, 0}, {0, 0, 0}}},
		{name: "andb $0xf7 misses eof", code: "806009f7", field: eof, kind: watch.NoEffect, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "movb $0x1,0x9(%rax)", code: "c6400901", field: eof, kind: watch.Store, konst: 1, base: 0, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "movb $0xfe,0x9(%rax)", code: "c64009fe", field: eof, kind: watch.Store, konst: 0, base: 0, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "mov %dl,0x9(%rax)", code: "885009", field: eof, kind: watch.Store, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: 1, apply: []apply{{0, 0x01, 1}, {1, 0xfe, 0}, {0, 0x101, 1}}},
		{name: "mov %dl,0x9(%rax) error", code: "885009", field: errBit, kind: watch.Store, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: 1, apply: []apply{{0, 0x02, 1}, {1, 0x01, 0}}},
		{name: "mov %ah,0x9(%rdi)", code: "886709", field: eof, kind: watch.Store, konst: noConst, base: 5, index: -1, disp: 9, size: 1, srcReg: 0, shift: 8, apply: []apply{{0, 0x0100, 1}, {1, 0x00ff, 0}}},
		{name: "movw $0x100,0x8(%rcx)", code: "66c741080001", field: eof, kind: watch.Store, konst: 1, base: 2, index: -1, disp: 8, size: 2, srcReg: -1},
		{name: "movw $0x100,0x8(%rcx) error", code: "66c741080001", field: errBit, kind: watch.Store, konst: 0, base: 2, index: -1, disp: 8, size: 2, srcReg: -1},
		{name: "movl $0x0,0x8(%rcx)", code: "c7410800000000", field: eof, kind: watch.Store, konst: 0, base: 2, index: -1, disp: 8, size: 4, srcReg: -1},
		{name: "mov %eax,0x8(%rsi)", code: "894608", field: eof, kind: watch.Store, konst: noConst, base: 4, index: -1, disp: 8, size: 4, srcReg: 0, apply: []apply{{0, 0x100, 1}, {1, 0x0ff, 0}}},
		{name: "movq $-1,0x8(%rax)", code: "48c74008ffffffff", field: timedout, kind: watch.Store, konst: 1, base: 0, index: -1, disp: 8, size: 8, srcReg: -1},
		{name: "btsl $0x8,0x8(%rax)", code: "0fba680808", field: eof, kind: watch.BitTestSet, konst: 1, base: 0, index: -1, disp: 8, size: 4, srcReg: -1},
		{name: "btrl $0x8,0x8(%rax)", code: "0fba700808", field: eof, kind: watch.BitTestReset, konst: 0, base: 0, index: -1, disp: 8, size: 4, srcReg: -1},
		{name: "btsl $0x9 misses eof", code: "0fba680809", field: eof, kind: watch.NoEffect, konst: noConst, base: 0, index: -1, disp: 8, size: 4, srcReg: -1},
		{name: "btsl $0x9 sets error", code: "0fba680809", field: errBit, kind: watch.BitTestSet, konst: 1, base: 0, index: -1, disp: 8, size: 4, srcReg: -1},
		{name: "btcl $0x8,0x8(%rax)", code: "0fba780808", field: eof, kind: watch.BitTestComplement, konst: noConst, base: 0, index: -1, disp: 8, size: 4, srcReg: -1, apply: []apply{{0, 0, 1}, {1, 0, 0}}},
		{name: "xorb $0x1,0x9(%rax)", code: "80700901", field: eof, kind: watch.ToggleBits, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: -1, apply: []apply{{0, 0, 1}, {1, 0, 0}}},
		{name: "notb 0x9(%rax)", code: "f65009", field: eof, kind: watch.ToggleBits, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: -1, apply: []apply{{0, 0, 1}, {1, 0, 0}}},
		{name: "orb $0x1,0x9(%rbp) (rbp is a general register)", code: "804d0901", field: eof, kind: watch.SetBits, konst: 1, base: 6, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "orb $0x1,0x9(%rax,%rdx,8)", code: "804cd00901", field: eof, kind: watch.SetBits, konst: 1, base: 0, index: 1, scale: 8, disp: 9, size: 1, srcReg: -1},
		{name: "orb $0x1,0x9(%r12)", code: "41804c240901", field: eof, kind: watch.SetBits, konst: 1, base: 12, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "or %rax,0x8(%rdx)", code: "48094208", field: eof, kind: watch.SetBits, konst: noConst, base: 1, index: -1, disp: 8, size: 8, srcReg: 0, apply: []apply{{0, 0x100, 1}, {0, 0xff, 0}, {1, 0, 1}}},
		{name: "and %rax,0x8(%r14)", code: "49214608", field: eof, kind: watch.ClearBits, konst: noConst, base: 14, index: -1, disp: 8, size: 8, srcReg: 0, apply: []apply{{1, 0x100, 1}, {1, ^uint64(0x100), 0}, {0, ^uint64(0), 0}}},
		{name: "xchg %dl,0x9(%rax)", code: "865009", field: eof, kind: watch.Store, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: 1, apply: []apply{{0, 1, 1}}},
		{name: "addb $0x1,0x9(%rax)", code: "80400901", field: eof, kind: watch.Unknown, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "movups %xmm1,(%rax)", code: "0f1108", field: eof, kind: watch.Unknown, konst: noConst, base: 0, index: -1, disp: 0, size: 16, srcReg: -1},
		{name: "lock cmpxchg %edx,0x8(%rax)", code: "f00fb15008", field: eof, kind: watch.Unknown, konst: noConst, base: 0, index: -1, disp: 8, size: 4, srcReg: 1},
		{name: "sete 0x9(%rax)", code: "0f944009", field: eof, kind: watch.Unknown, konst: noConst, base: 0, index: -1, disp: 9, size: 1, srcReg: -1},
		{name: "bts %rax,0x8(%rdx)", code: "480fab4208", field: eof, kind: watch.Unknown, konst: noConst, base: 1, index: -1, disp: 8, size: 8, srcReg: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sites, _ := scan(t, tc.code, tc.field)
			if len(sites) != 1 {
				t.Fatalf("got %d sites, want 1: %v", len(sites), sites)
			}
			s := sites[0]
			t.Logf("%v", s)
			if s.Kind != tc.kind {
				t.Errorf("kind %v, want %v (reason %q)", s.Kind, tc.kind, s.Reason)
			}
			if s.Address != pc0 || s.Len != len(code(t, tc.code)) {
				t.Errorf("address %#x len %d", s.Address, s.Len)
			}
			if s.Base != tc.base || s.Index != tc.index || s.Scale != tc.scale || s.Disp != tc.disp || s.Size != tc.size {
				t.Errorf("operand base %d index %d scale %d disp %d size %d, want %d %d %d %d %d", s.Base, s.Index, s.Scale, s.Disp, s.Size, tc.base, tc.index, tc.scale, tc.disp, tc.size)
			}
			if s.SrcReg != tc.srcReg || s.SrcShift != tc.shift {
				t.Errorf("source reg %d shift %d, want %d %d", s.SrcReg, s.SrcShift, tc.srcReg, tc.shift)
			}
			if tc.text != "" && s.Text != tc.text {
				t.Errorf("text %q, want %q", s.Text, tc.text)
			}
			v, ok := s.Const()
			if tc.konst == noConst {
				if ok {
					t.Errorf("Const() = %d, want none", v)
				}
			} else if !ok || v != tc.konst {
				t.Errorf("Const() = %d, %v; want %d", v, ok, tc.konst)
			}
			if tc.kind == watch.Unknown {
				if s.Reason == "" {
					t.Error("unknown site without a reason")
				}
				if _, ok := s.Apply(0, 0); ok {
					t.Error("Apply works on an unknown site")
				}
			}
			for _, a := range tc.apply {
				if got, ok := s.Apply(a.old, a.src); !ok || got != a.want {
					t.Errorf("Apply(old %d, src %#x) = %d, %v; want %d", a.old, a.src, got, ok, a.want)
				}
			}
			if kc := tc.konst; kc != noConst {
				for old := uint64(0); old < 2; old++ {
					if got, _ := s.Apply(old, 0x5555); got != kc {
						t.Errorf("Apply(%d) = %d, want the constant %d", old, got, kc)
					}
				}
			}
		})
	}
}

func TestNotCandidates(t *testing.T) {
	tests := []struct {
		name  string
		code  string
		stack int
		str   int
	}{
		{name: "orb $0x1,0xa(%rbx): another byte", code: "804b0a01"},
		{name: "orb $0x1,0x8(%rbx): another byte", code: "804b0801"},
		{name: "movw $0x1,0xa(%rcx): after the field", code: "66c7410a0100"},
		{name: "orb $0x1,0x9(%rsp): a stack slot", code: "804c240901", stack: 1},
		{name: "movzbl 0x9(%rax),%eax: a load", code: "0fb64009"},
		{name: "testb $0x1,0x9(%rax)", code: "f6400901"},
		{name: "cmpb $0x0,0x9(%rax)", code: "80780900"},
		{name: "bt $0x8,0x8(%rax)", code: "0fba600808"},
		{name: "nopw 0x0(%rax,%rax,1)", code: "660f1f440000"},
		{name: "orb $0x1,0x9(%rip): not a global of the type", code: "800d0900000001"},
		{name: "rep stos %rax,%es:(%rdi)", code: "f348ab", str: 1},
		{name: "lea 0x9(%rax),%rdx", code: "488d5009"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sites, st := scan(t, tc.code, eof)
			if len(sites) != 0 {
				t.Errorf("got sites %v", sites)
			}
			if st.Stack != tc.stack || st.StringOps != tc.str {
				t.Errorf("stats: stack %d string ops %d, want %d %d", st.Stack, st.StringOps, tc.stack, tc.str)
			}
		})
	}
}

// Read-modify-write sequences as GCC emits them for bitfields; the site
// is the store, the last instruction.
func TestReadModifyWrite(t *testing.T) {
	timer := timedout
	timer.Bases = []watch.Base{{At: 40, Via: "ngx_event_t.timer"}}
	noConst := ^uint64(0)
	tests := []struct {
		name    string
		code    string
		field   watch.FieldRef
		kind    watch.Kind
		konst   uint64
		load    uint64 // offset of the load from pc0, or noLoad
		dynamic bool   // the effect needs the source register
	}{
		{
			// rev->ready = 0; rev->eof = 1; in ngx_unix_recv
			name: "movzwl; and $0xfedf,%ax; or $0x1,%ah; mov %ax,0x8(%r14)",
			code: "410fb74608 6625dffe 80cc01 6641894608", field: eof, kind: watch.Store, konst: 1, load: 0,
		},
		{
			name: "the same sequence keeps error",
			code: "410fb74608 6625dffe 80cc01 6641894608", field: errBit, kind: watch.NoEffect, konst: noConst, load: 0,
		},
		{
			name: "movzbl; and $0xf7,%edx; mov %dl: timer_set = 0 keeps eof",
			code: "0fb65009 81e2f7000000 885009", field: eof, kind: watch.NoEffect, konst: noConst, load: 0,
		},
		{
			name: "base register changes before the store: eof is still a constant",
			code: "0fb65009 83ca01 488b4010 885009", field: eof, kind: watch.Store, konst: 1, load: noLoad,
		},
		{
			name: "base register changes before the store: error is unknown",
			code: "0fb65009 83ca01 488b4010 885009", field: errBit, kind: watch.Store, konst: noConst, load: noLoad, dynamic: true,
		},
		{
			name: "the store is a branch target: nothing known",
			code: "0fb65009 7403 83ca01 885009", field: eof, kind: watch.Store, konst: noConst, load: noLoad, dynamic: true,
		},
		{
			name: "pxor %xmm0,%xmm0; movups %xmm0,(%rax): memzero",
			code: "660fefc0 0f1100", field: eof, kind: watch.Store, konst: 0, load: noLoad,
		},
		{
			name: "a store through another base in between forgets the load",
			code: "0fb65009 c6410300 885009", field: eof, kind: watch.Store, konst: noConst, load: noLoad, dynamic: true,
		},
		{
			name: "mov $0x1,%edx; mov %dl,0x9(%rax)",
			code: "ba01000000 885009", field: eof, kind: watch.Store, konst: 1, load: noLoad,
		},
		{
			// ev->timer_set = 0; ev->timedout = 1; through the timer node
			// in ngx_event_expire_timers
			name: "movzbl -0x1f(%rbx); and; or $0x4; mov %al,-0x1f(%rbx) via timer",
			code: "0fb643e1 83e0f7 83c804 8843e1", field: timer, kind: watch.Store, konst: 1, load: 0,
		},
		{
			// rev->available = 0; rev->ready = 0; in ngx_unix_recv
			name: "mov $0xffffffdf,%eax; and %rax,0x8(%r14) keeps eof",
			code: "b8dfffffff 49214608", field: eof, kind: watch.NoEffect, konst: noConst, load: noLoad,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := code(t, tc.code)
			sites, _ := scan(t, tc.code, tc.field)
			if len(sites) != 1 {
				t.Fatalf("got %d sites, want 1: %v", len(sites), sites)
			}
			s := sites[0]
			t.Logf("%v", s)
			if end := s.Address + uint64(s.Len); end != pc0+uint64(len(b)) {
				t.Errorf("site at %#x is not the last instruction", s.Address)
			}
			if s.Kind != tc.kind {
				t.Errorf("kind %v, want %v", s.Kind, tc.kind)
			}
			v, ok := s.Const()
			if tc.konst == noConst {
				if ok {
					t.Errorf("Const() = %d, want none", v)
				}
			} else if !ok || v != tc.konst {
				t.Errorf("Const() = %d, %v; want %d", v, ok, tc.konst)
			}
			if tc.load == noLoad {
				if s.LoadAddr != 0 {
					t.Errorf("LoadAddr %#x, want none", s.LoadAddr)
				}
			} else if s.LoadAddr != pc0+tc.load {
				t.Errorf("LoadAddr %#x, want %#x", s.LoadAddr, pc0+tc.load)
			}
			if got := s.Effect.SrcReg != watch.NoReg; got != tc.dynamic {
				t.Errorf("effect reads a register: %v, want %v", got, tc.dynamic)
			}
			if tc.field.Bases != nil && s.BaseAt != 40 {
				t.Errorf("BaseAt %d, want 40", s.BaseAt)
			}
		})
	}
}

const noLoad = ^uint64(0)

// Without KeepNoEffect, no-effect sites are dropped and counted.
func TestNoEffectDropped(t *testing.T) {
	sites, st, err := watch.ScanCode(code(t, "804b0902 806009f7 804b0901"), pc0, eof, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 1 || sites[0].Address != pc0+8 || st.NoEffect != 2 {
		t.Errorf("sites %v, no-effect %d; want the orb $0x1 only, 2 dropped", sites, st.NoEffect)
	}
}

// A field whose bits straddle two bytes, written one byte at a time.
func TestStraddlingField(t *testing.T) {
	f := watch.FieldRef{Type: "t", Member: "f", Offset: 9, BitOffset: 6, BitSize: 4, Bitfield: true} // bits 6-7 of byte 9, 0-1 of byte 10
	// movb $0xc0,0x9(%rax): sets the field's two low bits, keeps the rest.
	sites, _ := scan(t, "c64009c0", f)
	if len(sites) != 1 {
		t.Fatalf("sites %v", sites)
	}
	if got, _ := sites[0].Apply(0b1000, 0); got != 0b1011 {
		t.Errorf("movb $0xc0,0x9: Apply(0b1000) = %#b, want 0b1011", got)
	}
	// orb $0x2,0xa(%rax): sets the field's bit 3.
	sites, _ = scan(t, "80480a02", f)
	if len(sites) != 1 {
		t.Fatalf("sites %v", sites)
	}
	if got, _ := sites[0].Apply(0b0001, 0); got != 0b1001 {
		t.Errorf("orb $0x2,0xa: Apply(0b0001) = %#b, want 0b1001", got)
	}
	// mov %ax,0x9(%rax): all four bits from ax bits 6-9.
	sites, _ = scan(t, "66894009", f)
	if len(sites) != 1 {
		t.Fatalf("sites %v", sites)
	}
	if got, _ := sites[0].Apply(0, 0b11_0100_0000); got != 0b1101 {
		t.Errorf("mov %%ax,0x9: Apply(src 0x340) = %#b, want 0b1101", got)
	}
	if !f.Overlaps(10, 1) || f.Overlaps(11, 1) || !f.Overlaps(8, 2) || f.Overlaps(7, 2) {
		t.Error("Overlaps")
	}
}

func TestInvalidField(t *testing.T) {
	bad := watch.FieldRef{Type: "t", Member: "x", Offset: 9, BitOffset: 0, BitSize: 72}
	if _, _, err := watch.ScanCode([]byte{0x90}, pc0, bad, nil); !errors.Is(err, watch.ErrTooWide) {
		t.Errorf("72-bit field: %v, want ErrTooWide", err)
	}
	bad = watch.FieldRef{Type: "t", Member: "x", Offset: 9, BitOffset: 0, BitSize: 0}
	if _, _, err := watch.ScanCode([]byte{0x90}, pc0, bad, nil); !errors.Is(err, watch.ErrNotField) {
		t.Errorf("0-bit field: %v, want ErrNotField", err)
	}
}

func TestSiteString(t *testing.T) {
	sites, _ := scan(t, "804b0901", eof)
	s := sites[0]
	s.Function, s.FunctionAddr, s.File, s.Line = "ngx_unix_recv", pc0-0x10, "/build/nginx-1.22.1/src/os/unix/ngx_recv.c", 76
	got := s.String()
	for _, want := range []string{"ngx_unix_recv+0x10", "src/os/unix/ngx_recv.c:76", "0x401000", "orb $0x1,0x9(%rbx)", "set"} {
		if !strings.Contains(got, want) {
			t.Errorf("String() = %q, lacks %q", got, want)
		}
	}
}

func TestObjectAddress(t *testing.T) {
	sites, _ := scan(t, "804cd00901", eof) // orb $0x1,0x9(%rax,%rdx,8)
	if a := sites[0].ObjectAddress(0x1000, 2, 0); a != 0x1010 {
		t.Errorf("ObjectAddress = %#x, want 0x1010", a)
	}
	timer := timedout
	timer.Bases = []watch.Base{{At: 40}}
	sites, _ = scan(t, "8843e1", timer) // mov %al,-0x1f(%rbx)
	if len(sites) != 1 || sites[0].ObjectAddress(0x2028, 0, 0) != 0x2000 || sites[0].ObjectOffset() != 9 {
		t.Errorf("timer base: %v", sites)
	}
}
