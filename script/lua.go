package script

import (
	"debug/dwarf"
	"strings"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/probes"
	"github.com/ngxprobe/ngxprobe/symbols"
)

// The Lua names of a script: $lua_where and $lua_chunk print where the
// running Lua code is (package lua reads it at the hit), and a filter
// can keep the hits whose Lua stack runs a chunk:
//
//	ngx_http_lua_ffi_exit / $lua_chunk == "auth.lua" / { print($lua_where, status) }
//
// The comparison runs in the kernel after the Lua walk, on every hit
// that the rest of the filter keeps, so it is joined to the rest with &&.

// luaFilter splits the top-level conjuncts of a filter that compare
// $lua_chunk from the rest, which it returns (nil when nothing is left).
func (c *compiler) luaFilter(x Expr) (rest Expr, matches []probes.LuaChunkMatch) {
	if b, ok := x.(*BinaryExpr); ok {
		switch b.Op {
		case "&&":
			l, lm := c.luaFilter(b.L)
			r, rm := c.luaFilter(b.R)
			matches = append(lm, rm...)
			switch {
			case l == nil:
				return r, matches
			case r == nil:
				return l, matches
			}
			n := *b
			n.L, n.R = l, r
			return &n, matches
		case "==", "!=":
			id, lit := luaOperands(b)
			if id == nil {
				break
			}
			if id.Name != probes.LuaChunk {
				c.errorf(id.At, ErrResolve, `filter on the chunk: $lua_chunk == "auth.lua"`, "%s cannot be compared in a filter", id.Name)
				return nil, nil
			}
			if lit == nil {
				c.errorf(b.At, ErrResolve, `compare it with a literal: $lua_chunk == "auth.lua"`, "$lua_chunk is compared with a string literal only")
				return nil, nil
			}
			if err := c.needLua(id); err != nil {
				return nil, nil
			}
			if n := len(lit.Value); n == 0 || n > probes.MaxLuaChunkMatch {
				c.errorf(lit.At, ErrResolve, "", "a chunk name of %d bytes: compare 1 to %d bytes (a file's name, or the end of its path)", n, probes.MaxLuaChunkMatch)
				return nil, nil
			}
			return nil, []probes.LuaChunkMatch{{Chunk: lit.Value, Negate: b.Op == "!="}}
		}
	}
	if at, ok := mentionsLua(x); ok {
		c.errorf(at, ErrResolve, `join it with &&: / c->number > 5 && $lua_chunk == "auth.lua" /`, "a Lua comparison is tested after the Lua walk, so it cannot be under || or !")
		return nil, nil
	}
	return x, nil
}

// luaOperands returns the $lua_ name and the string literal of a
// comparison, when one side is a $lua_ name.
func luaOperands(b *BinaryExpr) (*symbols.Ident, *StrLit) {
	l, lok := b.L.(*symbols.Ident)
	r, rok := b.R.(*symbols.Ident)
	switch {
	case lok && strings.HasPrefix(l.Name, "$lua"):
		s, _ := b.R.(*StrLit)
		return l, s
	case rok && strings.HasPrefix(r.Name, "$lua"):
		s, _ := b.L.(*StrLit)
		return r, s
	}
	return nil, nil
}

// mentionsLua finds a $lua_ name in x.
func mentionsLua(x Expr) (int, bool) {
	switch e := x.(type) {
	case *symbols.Ident:
		return e.At, strings.HasPrefix(e.Name, "$lua")
	case *BinaryExpr:
		if at, ok := mentionsLua(e.L); ok {
			return at, true
		}
		return mentionsLua(e.R)
	case *Not:
		return mentionsLua(e.X)
	}
	return 0, false
}

// needLua records an error when the image has no lua-nginx-module.
func (c *compiler) needLua(id *symbols.Ident) error {
	if !c.luaChecked {
		c.luaChecked = true
		if _, err := lua.FindModule(c.img); err != nil {
			c.luaErr = err
		}
	}
	if c.luaErr != nil {
		c.errorf(id.At, ErrResolve, "with --binary, name lua-nginx-module with --module (e.g. --module /usr/lib/nginx/modules/ngx_http_lua_module.so)", "%s: there is no Lua to read: %v", id.Name, c.luaErr)
	}
	return c.luaErr
}

// luaStateArg is the plan of the probed function's lua_State *L
// argument, where the Lua walk starts (probes.Probe.LuaState); nil when
// it has none: the walk takes the VM's running lua_State.
func luaStateArg(sc *scope) *symbols.Plan {
	plan, err := sc.bin.Compile("L", &symbols.Ident{Name: "L"}, sc)
	if err != nil || plan.Read.Kind != symbols.ReadValue || plan.Root.Unavailable != "" {
		return nil
	}
	if p, ok := symbols.Underlying(plan.Type).(*dwarf.PtrType); !ok || !strings.Contains(symbols.TypeName(p.Type), "lua_State") {
		return nil
	}
	return plan
}
