// Package lua reads the Lua frames of OpenResty's LuaJIT (2.1, GC64) out
// of a traced nginx, for stacks that pass through lua-nginx-module.
//
// A C stack through Lua ends in lj_vm_* and ngx_http_lua_run_thread,
// which says nothing about the Lua code that decided. The Lua frames are
// on the running coroutine's Lua stack, not the C stack, so a probe's BPF
// program walks them at the hit (package probes emits the walk from a
// Layout): the Lua stack, its protos, line info and chunk names may be
// gone or reused by the time user space reads the event. Decode turns
// what the walk copied into frames, exactly as debug.traceback() would
// name them: chunk, line, and the function's first line.
//
// The walk finds the running lua_State from nginx's own globals,
// ngx_cycle -> the http main conf of ngx_http_lua_module -> the VM's main
// thread -> global_State.cur_L, and trusts it only while it is inside the
// VM (lua_State.cframe set): lua-nginx-module resets a coroutine's stack
// before it finalizes the request, so the Lua frames of a close must be
// caught where Lua decides (ngx_http_lua_ffi_exit, a cosocket call).
//
// Every struct offset comes from DWARF (LuaJIT's debug info, package
// libluajit2-5.1-2-dbgsym on Debian; lua-nginx-module's and nginx's for
// theirs). What DWARF cannot say, the frame-link encoding and the GC64
// pointer mask, are LuaJIT's macros (lj_frame.h, lj_obj.h), constants
// here.
//
// Code running inside a JIT trace has no interpreter frame for the
// functions the trace inlined: the walk reports the trace (its number,
// and the function and line it starts at) and the frames below the
// trace's base, which the VM keeps, and never makes up the others.
package lua
