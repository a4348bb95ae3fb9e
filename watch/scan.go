package watch

import (
	"debug/elf"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// ErrArch means the binary is not x86-64.
var ErrArch = errors.New("only x86-64 binaries can be scanned")

// Options tunes Scan.
type Options struct {
	// KeepNoEffect keeps or/and/bt* sites whose immediate misses the field.
	KeepNoEffect bool
	// NoLines skips source lines, inline chains and type hints.
	NoLines bool
	// DropMismatch drops sites whose base register holds only variables
	// pointing to other structs (HintMismatch; see the package doc).
	DropMismatch bool
}

// Stats describes a scan.
type Stats struct {
	Ranges       int    // code ranges decoded (function symbols, or sections)
	Bytes        uint64 // code bytes decoded
	Instructions int
	DecodeErrors int // bytes skipped because they did not decode
	// Writes not reported because of their address: rsp-based ones whose
	// displacement fits (stack slots), rip-relative ones to anything but a
	// global of the watched type, and absolute or fs/gs-based ones whose
	// displacement fits.
	Stack, RIP, Absolute int
	NoEffect             int // dropped unless Options.KeepNoEffect
	// StringOps counts stos/movs: they write (%rdi), which may be any
	// object; they are not sites (see the package doc).
	StringOps int
	Kinds     map[Kind]int     // reported sites by kind
	Hints     map[TypeHint]int // reported sites by type hint
	Mismatch  int              // dropped by Options.DropMismatch
	Addresses int              // distinct instructions among the sites (an instruction may fit several bases)
	Setup     time.Duration    // code ranges and globals of the watched type
	Decode    time.Duration    // decoding and classifying, in parallel
	Lines     time.Duration    // source lines, inline chains and type hints
}

// Result is what Scan found.
type Result struct {
	Field FieldRef
	Sites []Site // by address
	Stats Stats
}

// FindWrites returns every instruction in the binary that may write the
// field: see Scan.
func FindWrites(bin *symbols.Binary, field FieldRef) ([]Site, error) {
	r, err := Scan(bin, field, nil)
	if err != nil {
		return nil, err
	}
	return r.Sites, nil
}

// codeRange is a run of instructions to decode: a function symbol's
// extent, or an executable section when there are no symbols.
type codeRange struct {
	name       string
	sym        uint64 // the symbol's address (start may be past it)
	start, end uint64
	data       []byte // the bytes of [start, end)
}

// Scan decodes every function of the binary (every executable section
// when it has no function symbols) and returns the instructions that may
// write the field: those with a memory destination whose base-relative
// range covers the field's bytes, and rip-relative writes to the field of
// a global of the watched type.
func Scan(bin *symbols.Binary, field FieldRef, opts *Options) (*Result, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := field.valid(); err != nil {
		return nil, err
	}
	f := bin.ELF()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%s: %v: %w", bin.Path, f.Machine, ErrArch)
	}
	start := time.Now()
	ranges, err := codeRanges(bin)
	if err != nil {
		return nil, err
	}
	res := &Result{Field: field, Stats: Stats{Kinds: map[Kind]int{}, Ranges: len(ranges)}}
	globals := newGlobalIndex(bin, field)
	res.Stats.Setup = time.Since(start)

	start = time.Now()
	// Functions are independent: decode them in parallel, keep the order.
	type part struct {
		sites []Site
		st    Stats
	}
	parts := make([]part, len(ranges))
	workers := min(runtime.GOMAXPROCS(0), 8)
	var wg sync.WaitGroup
	next := make(chan int, len(ranges))
	for i := range ranges {
		next <- i
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				parts[i].sites = scanRange(ranges[i], field, globals, opts, &parts[i].st)
			}
		}()
	}
	wg.Wait()
	st := &res.Stats
	for _, p := range parts {
		res.Sites = append(res.Sites, p.sites...)
		st.Bytes += p.st.Bytes
		st.Instructions += p.st.Instructions
		st.DecodeErrors += p.st.DecodeErrors
		st.Stack += p.st.Stack
		st.RIP += p.st.RIP
		st.Absolute += p.st.Absolute
		st.NoEffect += p.st.NoEffect
		st.StringOps += p.st.StringOps
	}
	sort.SliceStable(res.Sites, func(i, j int) bool { return res.Sites[i].Address < res.Sites[j].Address })
	st.Decode = time.Since(start)

	for i := range res.Sites {
		s := &res.Sites[i]
		if off, err := bin.FileOffset(s.Address); err == nil {
			s.FileOffset = off
		}
	}
	if !opts.NoLines && bin.DWARF() != nil {
		start := time.Now()
		annotateLines(bin, res.Sites)
		st.Lines = time.Since(start)
	}
	if opts.DropMismatch {
		kept := res.Sites[:0]
		for _, s := range res.Sites {
			if s.Hint == HintMismatch {
				st.Mismatch++
				continue
			}
			kept = append(kept, s)
		}
		res.Sites = kept
	}
	st.Hints = map[TypeHint]int{}
	for i, s := range res.Sites {
		st.Kinds[s.Kind]++
		st.Hints[s.Hint]++
		if i == 0 || s.Address != res.Sites[i-1].Address {
			st.Addresses++
		}
	}
	return res, nil
}

type decoded struct {
	pc   uint64
	off  int // in the range's data
	inst x86asm.Inst
}

func scanRange(r codeRange, field FieldRef, globals *globalIndex, opts *Options, st *Stats) []Site {
	data := r.data
	st.Bytes += uint64(len(data))
	// Pass 1: decode, and note direct branch targets: the analysis state
	// is reset there, other paths join.
	insts := make([]decoded, 0, len(data)/4)
	targets := map[uint64]bool{}
	for off := 0; off < len(data); {
		pc := r.start + uint64(off)
		inst, err := x86asm.Decode(data[off:], 64)
		if err != nil || inst.Len == 0 {
			st.DecodeErrors++
			targets[pc+1] = true // resynchronizing: know nothing
			off++
			continue
		}
		st.Instructions++
		if isStringOp(inst.Op) {
			st.StringOps++
		}
		if rel, ok := inst.Args[0].(x86asm.Rel); ok {
			targets[pc+uint64(inst.Len)+uint64(int64(rel))] = true
		}
		insts = append(insts, decoded{pc, off, inst})
		off += inst.Len
	}
	// Pass 2: classify the writes, with the state before each.
	var out []Site
	var state regState
	for _, d := range insts {
		if targets[d.pc] {
			state.reset()
		}
		sites, why := classify(d.inst, d.pc, field, globals, &state)
		state.step(d.inst, d.pc)
		switch why {
		case skipStack:
			st.Stack++
		case skipRIP:
			st.RIP++
		case skipAbsolute:
			st.Absolute++
		}
		for _, s := range sites {
			if s.Kind == NoEffect {
				st.NoEffect++
				if !opts.KeepNoEffect {
					continue
				}
			}
			s.Function, s.FunctionAddr = r.name, r.sym
			if r.name == "" {
				s.FunctionAddr = r.start
			}
			s.Bytes = append([]byte(nil), data[d.off:d.off+d.inst.Len]...)
			out = append(out, s)
		}
	}
	return out
}

// ScanCode scans machine code that is not in a binary (tests, or a
// function's bytes read from a process): code holds instructions starting
// at address pc. Sites have no function, file offset or line.
func ScanCode(code []byte, pc uint64, field FieldRef, opts *Options) ([]Site, Stats, error) {
	if err := field.valid(); err != nil {
		return nil, Stats{}, err
	}
	if opts == nil {
		opts = &Options{}
	}
	st := Stats{Kinds: map[Kind]int{}, Hints: map[TypeHint]int{}, Ranges: 1}
	sites := scanRange(codeRange{start: pc, end: pc + uint64(len(code)), data: code}, field, nil, opts, &st)
	for i, s := range sites {
		st.Kinds[s.Kind]++
		st.Hints[s.Hint]++
		if i == 0 || s.Address != sites[i-1].Address {
			st.Addresses++
		}
	}
	return sites, st, nil
}

// codeRanges lists the function symbols in executable sections, each
// with its bytes; aliases are merged, preferring plain names. Without
// function symbols the executable sections are decoded whole.
func codeRanges(bin *symbols.Binary) ([]codeRange, error) {
	f := bin.ELF()
	var execs []*elf.Section
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && s.Flags&elf.SHF_EXECINSTR != 0 && s.Size > 0 {
			execs = append(execs, s)
		}
	}
	data := map[*elf.Section][]byte{}
	section := func(addr uint64) (*elf.Section, []byte, error) {
		for _, s := range execs {
			if addr >= s.Addr && addr < s.Addr+s.Size {
				d, ok := data[s]
				if !ok {
					var err error
					if d, err = s.Data(); err != nil {
						return nil, nil, fmt.Errorf("%s: section %s: %w", bin.Path, s.Name, err)
					}
					data[s] = d
				}
				return s, d, nil
			}
		}
		return nil, nil, nil
	}

	syms := bin.FunctionSymbols()
	sort.SliceStable(syms, func(i, j int) bool {
		if syms[i].Value != syms[j].Value {
			return syms[i].Value < syms[j].Value
		}
		return betterName(syms[i].Name, syms[j].Name)
	})
	var out []codeRange
	var end uint64 // of the last range taken
	for i, s := range syms {
		if i > 0 && s.Value == syms[i-1].Value {
			continue // an alias of the previous, worse-named
		}
		sec, d, err := section(s.Value)
		if err != nil {
			return nil, err
		}
		if sec == nil {
			continue
		}
		lo, hi := s.Value, s.Value+s.Size
		if s.Size == 0 {
			// Sizeless (assembly) symbols run to the next symbol.
			hi = sec.Addr + sec.Size
			for _, n := range syms[i+1:] {
				if n.Value > lo {
					hi = n.Value
					break
				}
			}
		}
		hi = min(hi, sec.Addr+sec.Size)
		if lo < end {
			// Nested in the previous range: already decoded.
			if hi <= end {
				continue
			}
			lo = end
		}
		end = hi
		name := strings.TrimSuffix(s.Name, "@@")
		out = append(out, codeRange{name: name, sym: s.Value, start: lo, end: hi, data: d[lo-sec.Addr : hi-sec.Addr]})
	}
	if len(out) == 0 {
		for _, s := range execs {
			if _, d, err := section(s.Addr); err != nil {
				return nil, err
			} else {
				out = append(out, codeRange{start: s.Addr, end: s.Addr + s.Size, data: d})
			}
		}
	}
	return out, nil
}

// betterName prefers a plain C name to a GCC local alias or a versioned
// dynamic name.
func betterName(a, b string) bool {
	pa := strings.Contains(a, ".localalias") || strings.Contains(a, "@")
	pb := strings.Contains(b, ".localalias") || strings.Contains(b, "@")
	if pa != pb {
		return !pa
	}
	return a < b
}
