package script_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ngxprobe/ngxprobe/lua"
	"github.com/ngxprobe/ngxprobe/script"
)

// The Lua names on nginx without lua-nginx-module: each use is an error
// that says why, and a misspelled or misplaced one says what to write.
// (With the module, e2e's TestLuaStacks and the lua examples run them.)
func TestCheckLuaNames(t *testing.T) {
	bin, _ := nginx(t, variants[0])
	for _, c := range []struct{ src, msg, hint string }{
		{`ngx_unix_recv { print($lua_where) }`, "$lua_where: there is no Lua to read: " + lua.ErrNoLuaModule.Error(), "--module"},
		{`ngx_unix_recv / $lua_chunk == "auth.lua" / { print(size) }`, "$lua_chunk: there is no Lua to read", "--module"},
		{`ngx_unix_recv { print($lua_wher) }`, "$lua_wher is not a Lua value; there are $lua_where and $lua_chunk (closest: $lua_where)", ""},
		{`ngx_unix_recv / size == 1 || $lua_chunk == "a.lua" / { print(size) }`, "a Lua comparison is tested after the Lua walk, so it cannot be under || or !", "join it with &&"},
		{`ngx_unix_recv / $lua_where == "a.lua:3" / { print(size) }`, "$lua_where cannot be compared in a filter", `$lua_chunk == "auth.lua"`},
		{`ngx_unix_recv / $lua_chunk == size / { print(size) }`, "$lua_chunk is compared with a string literal only", "compare it with a literal"},
	} {
		errs := compileErrors(t, bin, c.src)
		e := errs[0]
		if !strings.Contains(e.Msg, c.msg) || !strings.Contains(e.Hint, c.hint) || !errors.Is(e, script.ErrResolve) {
			t.Errorf("%s:\n got %q (hint %q)\nwant %q (hint containing %q)", c.src, e.Msg, e.Hint, c.msg, c.hint)
		}
	}
}
