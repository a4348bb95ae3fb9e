package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ngxprobe/ngxprobe/internal/output"
	"github.com/ngxprobe/ngxprobe/internal/target"
	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/stacks"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// luaLayout is the Lua walk for stacks, when the target runs
// lua-nginx-module; nil, with a note saying why, when its frames cannot
// be read (C frames still print).
func luaLayout(img *symbols.Image, t *target.Target, stderr io.Writer) *lua.Layout {
	l, err := lua.Find(img, "", t.PID)
	switch {
	case errors.Is(err, lua.ErrNoLuaModule):
		return nil
	case err != nil:
		fmt.Fprintf(stderr, "ngxprobe: note: no Lua frames in stacks: %s\n", output.Escape(err.Error()))
		return nil
	}
	fmt.Fprintf(stderr, "ngxprobe: stacks show Lua frames: %s on %s (up to %d frames per hit)\n", l.Module, l.Library, l.MaxFrames)
	return l
}

// anyLua: a probe prints a value of the Lua walk.
func anyLua(ps []*probes.Probe) bool {
	for _, p := range ps {
		if len(p.Lua) > 0 {
			return true
		}
	}
	return false
}

// withLuaFrames puts the Lua frames of a hit in the C stack where the
// LuaJIT VM ran them: each stretch of Lua frames that C code entered
// (lua_resume, lua_pcall) above the run of VM frames that runs it.
func withLuaFrames(st *output.Stack, ls *lua.Stack, u *stacks.Unwinder, pid int) *output.Stack {
	if ls.Status == lua.StatusIdle || ls.Status == lua.StatusNone {
		return st // no Lua on the CPU: a C stack only
	}
	if ls.Status != lua.StatusOK {
		st.Notes = append(st.Notes, "no Lua frames: "+ls.Why)
		return st
	}
	// Segments of Lua frames, innermost first, each ending at an entry.
	var segs [][]output.Frame
	var cur []output.Frame
	if ls.Trace != nil {
		cur = append(cur, traceFrame(ls.Trace))
	}
	if ls.Suspended {
		cur = append(cur, output.Frame{Lua: &output.LuaFrame{Kind: "suspended", Text: "(a coroutine waiting to be resumed, not running: its frames)"}})
	}
	for _, f := range ls.Frames {
		cur = append(cur, luaFrame(f, u, pid))
		if f.Entry {
			segs, cur = append(segs, cur), nil
		}
	}
	if ls.Truncated {
		cur = append(cur, output.Frame{Lua: &output.LuaFrame{Kind: "truncated", Text: "... (more Lua frames than the walk copies)"}})
	}
	if len(cur) > 0 {
		segs = append(segs, cur)
	}
	out := &output.Stack{Truncated: st.Truncated, Reason: st.Reason, Notes: st.Notes}
	if ls.Suspended {
		// A coroutine waiting to be resumed runs on no C frame: its frames
		// come first, where they are seen, then the C stack of the hit.
		for _, seg := range segs {
			out.Frames = append(out.Frames, seg...)
		}
		out.Frames = append(out.Frames, st.Frames...)
		return out
	}
	inVM := false
	for _, f := range st.Frames {
		vm := isVMFrame(f)
		if vm && !inVM && len(segs) > 0 {
			out.Frames = append(out.Frames, segs[0]...)
			segs = segs[1:]
		}
		inVM = vm
		out.Frames = append(out.Frames, f)
	}
	// JIT-compiled code has no unwind info: the C stack ends where it
	// called; the Lua frames follow.
	for _, s := range segs {
		out.Frames = append(out.Frames, s...)
	}
	return out
}

// isVMFrame: a frame of LuaJIT's interpreter or runtime.
func isVMFrame(f output.Frame) bool {
	return f.Lua == nil && (strings.Contains(filepath.Base(f.Module), "luajit") || strings.HasPrefix(f.Symbol, "lj_"))
}

func luaFrame(f lua.Frame, u *stacks.Unwinder, pid int) output.Frame {
	lf := &output.LuaFrame{Line: f.Line, FirstLine: f.FirstLine, Text: f.String()}
	switch f.Kind {
	case lua.KindLua:
		lf.Kind, lf.Source = "lua", lua.ShortSource(f.Source)
		if f.FirstLine == 0 {
			lf.Kind = "main"
		}
	case lua.KindC:
		lf.Kind, lf.Source = "C", "[C]"
		// debug.traceback() names a C function by how Lua called it
		// ('receive'); when it cannot, it gives the address, which the
		// symbol explains.
		if fs := u.Symbolize(pid, f.CFunc); f.NameWhat == "" && len(fs) > 0 && fs[len(fs)-1].Symbol != "" {
			lf.Text = fmt.Sprintf("%s (%s)", f.String(), fs[len(fs)-1].Symbol)
		}
	case lua.KindBuiltin:
		lf.Kind = "builtin"
	default:
		lf.Kind = "unknown"
	}
	return output.Frame{Lua: lf}
}

func traceFrame(t *lua.Trace) output.Frame {
	s := t.Start
	text := fmt.Sprintf("JIT trace %d, started at %s: the frames it inlined are not known", t.Number, s.Where())
	if s.FirstLine > 0 {
		text = fmt.Sprintf("JIT trace %d, started at %s in function <%s:%d>: the frames it inlined are not known", t.Number, s.Where(), lua.ShortSource(s.Source), s.FirstLine)
	}
	return output.Frame{Lua: &output.LuaFrame{Kind: "trace", Source: lua.ShortSource(s.Source), Line: s.Line, FirstLine: s.FirstLine, Text: text}}
}

// luaNamer names Lua functions as debug.traceback() does, from the
// callers' bytecode, read from the worker's memory when the event is
// printed (lua.Namer checks that it is still the proto the walk saw).
type luaNamer struct {
	namer *lua.Namer
}

func newLuaNamer(l *lua.Layout) *luaNamer { return &luaNamer{namer: lua.NewNamer(l)} }

// name names the frames of a hit in the process pid; a process that is
// gone, or memory that cannot be read, leaves them unnamed.
func (n *luaNamer) name(pid int, st *lua.Stack) {
	if n == nil || st == nil || st.Status != lua.StatusOK {
		return
	}
	n.namer.Name(processMemory(pid), st)
}

// processMemory reads another process's memory with process_vm_readv,
// which needs ptrace access (CAP_SYS_PTRACE, kept after attach) but, unlike
// opening /proc/PID/mem, no file permission: a worker runs as another
// user, and CAP_DAC_OVERRIDE is dropped after attach.
type processMemory int

func (pid processMemory) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	local := []unix.Iovec{{Base: &p[0]}}
	local[0].SetLen(len(p))
	remote := []unix.RemoteIovec{{Base: uintptr(off), Len: len(p)}}
	n, err := unix.ProcessVMReadv(int(pid), local, remote, 0)
	if err != nil {
		return n, err
	}
	if n < len(p) {
		return n, io.ErrUnexpectedEOF
	}
	return n, nil
}
