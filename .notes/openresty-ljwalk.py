# gdb walker used for .notes/openresty.md (research only): gdb -p <worker> -batch -ex "set $maxhits=N" -x openresty-ljwalk.py -ex continue
# Breaks on ngx_http_lua_ffi_exit (walks cur_co_ctx->co with the algorithm of section 2.3, DWARF offsets) and ngx_http_finalize_request.
import gdb
import struct

inf = gdb.selected_inferior()
MASK = (1 << 47) - 1
hits = [0]
summary = {}
MAXHITS = int(gdb.parse_and_eval("$maxhits"))


def rd(a, n):
    return bytes(inf.read_memory(a, n))


def u64(a):
    return struct.unpack('<Q', rd(a, 8))[0]


def i64(a):
    return struct.unpack('<q', rd(a, 8))[0]


def u32(a):
    return struct.unpack('<I', rd(a, 4))[0]


def i32(a):
    return struct.unpack('<i', rd(a, 4))[0]


def u8(a):
    return rd(a, 1)[0]


_off = {}


def off(t, f):
    k = (t, f)
    if k not in _off:
        _off[k] = int(gdb.parse_and_eval("(long)&((%s*)0)->%s" % (t, f)))
    return _off[k]


def size(t):
    return int(gdb.parse_and_eval("sizeof(%s)" % t))


def chunkname(pt):
    s = u64(pt + off('GCproto', 'chunkname'))
    n = u32(s + off('GCstr', 'len'))
    return rd(s + size('GCstr'), n).decode()


def line(pt, pos):
    first = u32(pt + off('GCproto', 'firstline'))
    numline = u32(pt + off('GCproto', 'numline'))
    sizebc = u32(pt + off('GCproto', 'sizebc'))
    li = u64(pt + off('GCproto', 'lineinfo'))
    if pos > sizebc or not li:
        return 0
    if pos == sizebc:
        return first + numline
    if pos == 0:
        return first
    pos -= 1
    if numline < 256:
        return first + u8(li + pos)
    if numline < 65536:
        return first + struct.unpack('<H', rd(li + 2 * pos, 2))[0]
    return first + u32(li + 4 * pos)


def describe(L, fn, nextframe):
    ffid = u8(fn + off('GCfuncL', 'ffid'))
    if ffid == 1:
        return "[C] %#x" % u64(fn + off('GCfuncC', 'f'))
    if ffid > 1:
        return "[builtin#%d]" % ffid
    bc = u64(fn + off('GCfuncL', 'pc'))
    pt = bc - size('GCproto')
    name = chunkname(pt)
    first = u32(pt + off('GCproto', 'firstline'))
    ins = None
    if nextframe is None:
        cf = u64(L + off('lua_State', 'cframe')) & ~3
        if cf:
            ins = u64(cf + 3 * 8)  # CFRAME_OFS_PC, x64 SysV GC64
            src = "cframe"
    else:
        nl = i64(nextframe)
        if nl & 3 == 0:
            ins = nl
            src = "link"
        elif nl & 7 == 2:
            ins = u64(nextframe - 16)
            src = "cont"
    ln = "?"
    if ins is not None:
        pos = (ins - bc) // 4 - 1
        ln = line(pt, pos)
    what = "main chunk" if first == 0 else "function <%s:%d>" % (name, first)
    return "%s:%s: in %s (pc from %s)" % (name, ln, what, src if ins is not None else "-")


def walk(L, label):
    g = u64(L + off('lua_State', 'glref'))
    base = u64(L + off('lua_State', 'base'))
    stack = u64(L + off('lua_State', 'stack'))
    vmstate = i32(g + off('global_State', 'vmstate'))
    jit_base = u64(g + off('global_State', 'jit_base'))
    cur_L = u64(g + off('global_State', 'cur_L'))
    mainth = u64(g + off('global_State', 'mainthref'))
    print("%s: L=%#x g=%#x vmstate=%d cur_L==L:%s main=%#x jit_base=%#x base=%#x" %
          (label, L, g, vmstate, cur_L == L, mainth, jit_base, base))
    if vmstate >= 0 and jit_base:
        base = jit_base
    frame = base - 8
    bot = stack + 8
    nextframe = None
    skip = False
    out = []
    while frame > bot:
        fn = u64(frame - 8) & MASK
        link = i64(frame)
        if fn != L and not skip:
            out.append("  frame %#x link %#x type %d: %s" % (frame, link & 0xffffffffffffffff, link & 7,
                                                           describe(L, fn, nextframe)))
        skip = (link & 7) == 3  # vararg pseudo-frame: the frame below is the same function
        nextframe = frame
        if link & 3 == 0:
            a = (u32(link - 4) >> 8) & 0xff
            frame = frame - 8 * (2 + a)
        else:
            frame = frame - (link & ~7)
    print("\n".join(out))
    return vmstate


def lua_of(r):
    """r's lua ctx (route 1.1), lmcf->lua, its global_State and G->cur_L (route 1.2)."""
    idx = int(gdb.parse_and_eval("ngx_http_lua_module.ctx_index"))
    ctx = u64(u64(r + off('ngx_http_request_t', 'ctx')) + 8 * idx)
    lmcf = u64(u64(r + off('ngx_http_request_t', 'main_conf')) + 8 * idx)
    mainL = u64(lmcf + off('ngx_http_lua_main_conf_t', 'lua'))
    g = u64(mainL + off('lua_State', 'glref'))
    return ctx, mainL, g, u64(g + off('global_State', 'cur_L'))


class Hit(gdb.Breakpoint):
    def stop(self):
        hits[0] += 1
        r = int(gdb.parse_and_eval("$rdi"))
        ctx, mainL, g, cur_L = lua_of(r)
        coctx = u64(ctx + off('ngx_http_lua_ctx_t', 'cur_co_ctx'))
        co = u64(coctx + off('ngx_http_lua_co_ctx_t', 'co'))
        exdata = u64(co + off('lua_State', 'exdata'))
        verbose = hits[0] <= 2
        vm = i32(g + off('global_State', 'vmstate'))
        summary[vm] = summary.get(vm, 0) + 1
        if verbose or (vm >= 0 and summary[vm] <= 2):
            print("hit %d: r=%#x ctx=%#x co=%#x lmcf->lua=%#x G->cur_L=%#x co->exdata==r:%s" %
                  (hits[0], r, ctx, co, mainL, cur_L, exdata == r))
            walk(co, "cur_co_ctx->co")
            if vm >= 0:
                J = g - off('GG_State', 'g') + off('GG_State', 'J')
                traces = u64(J + off('jit_State', 'trace'))
                T = u64(traces + 8 * vm)
                startpt = u64(T + off('GCtrace', 'startpt'))
                startpc = u64(T + off('GCtrace', 'startpc'))
                mcode = u64(T + off('GCtrace', 'mcode'))
                szm = u32(T + off('GCtrace', 'szmcode'))
                bcstart = startpt + size('GCproto')
                print("  trace %d: starts %s:%d, mcode %#x+%d, parent(J)=%d" %
                      (vm, chunkname(startpt), line(startpt, (startpc - bcstart) // 4), mcode, szm,
                       u32(J + off('jit_State', 'parent'))))
                rip = int(gdb.parse_and_eval("*(unsigned long*)$rsp"))
                print("  return address %#x in trace mcode: %s" % (rip, mcode <= rip < mcode + szm))
        if hits[0] >= MAXHITS:
            print("vmstate summary:", summary)
            return True
        return False


Hit("ngx_http_lua_ffi_exit")


fin = [0]


class Fin(gdb.Breakpoint):
    def stop(self):
        fin[0] += 1
        if fin[0] > 3 and hits[0] < MAXHITS - 1:
            return False
        r = int(gdb.parse_and_eval("$rdi"))
        rc = int(gdb.parse_and_eval("(long)$rsi"))
        ctxp, mainL, g, cur_L = lua_of(r)
        vm = i32(g + off('global_State', 'vmstate'))
        msg = "finalize %d (exit hit %d): r=%#x rc=%d vmstate=%d cur_L=%#x cur_L->cframe=%#x" % (
            fin[0], hits[0], r, rc, vm, cur_L, u64(cur_L + off('lua_State', 'cframe')))
        if ctxp:
            coctx = u64(ctxp + off('ngx_http_lua_ctx_t', 'cur_co_ctx'))
            co = u64(coctx + off('ngx_http_lua_co_ctx_t', 'co'))
            base = u64(co + off('lua_State', 'base'))
            top = u64(co + off('lua_State', 'top'))
            stack = u64(co + off('lua_State', 'stack'))
            msg += " co=%#x (==cur_L:%s) co->cframe=%#x base-stack=%d top-stack=%d" % (
                co, co == cur_L, u64(co + off('lua_State', 'cframe')), (base - stack) // 8, (top - stack) // 8)
        print(msg)
        bt = gdb.execute("bt 8", to_string=True)
        print("  " + "\n  ".join(bt.splitlines()[:8]))
        return False


Fin("ngx_http_finalize_request")
