package lua

// LuaJIT's bytecode, as far as naming a function needs it: the operand
// modes and the metamethod of each opcode, in opcode order. A Namer
// reads another process's bytecode, so the table is LuaJIT's own, not a
// guess: BCDEF of lj_bc.h (lines 71-197 in OpenResty's luajit2
// v2.1-20230119), an entry per _(name, ma, mb, mc, mm), whose metamethod
// names are those of lj_obj.h's MMDEF (lines 556-563). The modes are
// lj_bc.h's BCMode (lines 238-243). TestOpcodesMatchLuaJIT derives them
// again from the headers that internal/nginxtest/build-openresty.sh
// builds with, and compares.

// bcMode is an operand's mode (lj_bc.h BCMode): what the operand names.
type bcMode uint8

// Operand modes, in lj_bc.h's order (ORDER BCMode).
const (
	modeNone  bcMode = iota // no operand
	modeDst                 // a slot the instruction writes
	modeBase                // the base of slots it reads or writes
	modeVar                 // a slot it reads
	modeRbase               // a base it only reads
	modeUv                  // an upvalue
	modeLit                 // an unsigned literal
	modeLits                // a signed literal
	modePri                 // a primitive (nil, false, true)
	modeNum                 // a number constant
	modeStr                 // a string constant
	modeTab                 // a table constant
	modeFunc                // a prototype constant
	modeJump                // a branch target
	modeCdata               // a cdata constant
)

// opcode describes one LuaJIT opcode.
type opcode struct {
	name     string
	a, b, cd bcMode
	// mm is the metamethod the instruction may call, as lj_obj.h's MMDEF
	// names it ("call", "index", ...; the VM looks up "__" + mm), or ""
	// when it calls none.
	mm string
}

// Opcodes a Namer looks at (lj_bc.h BCOp): indexes into opcodes.
const (
	opMOV   = 18
	opKNIL  = 44
	opUGET  = 45
	opGGET  = 54
	opTGETS = 57
	opITERC = 69
	opITERN = 70
)

// opcodes is lj_bc.h's BCDEF: opcodes[op] describes opcode op.
var opcodes = [...]opcode{
	// Comparisons.
	{"ISLT", modeVar, modeNone, modeVar, "lt"},
	{"ISGE", modeVar, modeNone, modeVar, "lt"},
	{"ISLE", modeVar, modeNone, modeVar, "le"},
	{"ISGT", modeVar, modeNone, modeVar, "le"},
	{"ISEQV", modeVar, modeNone, modeVar, "eq"},
	{"ISNEV", modeVar, modeNone, modeVar, "eq"},
	{"ISEQS", modeVar, modeNone, modeStr, "eq"},
	{"ISNES", modeVar, modeNone, modeStr, "eq"},
	{"ISEQN", modeVar, modeNone, modeNum, "eq"},
	{"ISNEN", modeVar, modeNone, modeNum, "eq"},
	{"ISEQP", modeVar, modeNone, modePri, "eq"},
	{"ISNEP", modeVar, modeNone, modePri, "eq"},

	// Unary tests and copies.
	{"ISTC", modeDst, modeNone, modeVar, ""},
	{"ISFC", modeDst, modeNone, modeVar, ""},
	{"IST", modeNone, modeNone, modeVar, ""},
	{"ISF", modeNone, modeNone, modeVar, ""},
	{"ISTYPE", modeVar, modeNone, modeLit, ""},
	{"ISNUM", modeVar, modeNone, modeLit, ""},

	// Unary operations.
	{"MOV", modeDst, modeNone, modeVar, ""},
	{"NOT", modeDst, modeNone, modeVar, ""},
	{"UNM", modeDst, modeNone, modeVar, "unm"},
	{"LEN", modeDst, modeNone, modeVar, "len"},

	// Binary operations.
	{"ADDVN", modeDst, modeVar, modeNum, "add"},
	{"SUBVN", modeDst, modeVar, modeNum, "sub"},
	{"MULVN", modeDst, modeVar, modeNum, "mul"},
	{"DIVVN", modeDst, modeVar, modeNum, "div"},
	{"MODVN", modeDst, modeVar, modeNum, "mod"},
	{"ADDNV", modeDst, modeVar, modeNum, "add"},
	{"SUBNV", modeDst, modeVar, modeNum, "sub"},
	{"MULNV", modeDst, modeVar, modeNum, "mul"},
	{"DIVNV", modeDst, modeVar, modeNum, "div"},
	{"MODNV", modeDst, modeVar, modeNum, "mod"},
	{"ADDVV", modeDst, modeVar, modeVar, "add"},
	{"SUBVV", modeDst, modeVar, modeVar, "sub"},
	{"MULVV", modeDst, modeVar, modeVar, "mul"},
	{"DIVVV", modeDst, modeVar, modeVar, "div"},
	{"MODVV", modeDst, modeVar, modeVar, "mod"},
	{"POW", modeDst, modeVar, modeVar, "pow"},
	{"CAT", modeDst, modeRbase, modeRbase, "concat"},

	// Constants.
	{"KSTR", modeDst, modeNone, modeStr, ""},
	{"KCDATA", modeDst, modeNone, modeCdata, ""},
	{"KSHORT", modeDst, modeNone, modeLits, ""},
	{"KNUM", modeDst, modeNone, modeNum, ""},
	{"KPRI", modeDst, modeNone, modePri, ""},
	{"KNIL", modeBase, modeNone, modeBase, ""},

	// Upvalues and closures.
	{"UGET", modeDst, modeNone, modeUv, ""},
	{"USETV", modeUv, modeNone, modeVar, ""},
	{"USETS", modeUv, modeNone, modeStr, ""},
	{"USETN", modeUv, modeNone, modeNum, ""},
	{"USETP", modeUv, modeNone, modePri, ""},
	{"UCLO", modeRbase, modeNone, modeJump, ""},
	{"FNEW", modeDst, modeNone, modeFunc, "gc"},

	// Tables.
	{"TNEW", modeDst, modeNone, modeLit, "gc"},
	{"TDUP", modeDst, modeNone, modeTab, "gc"},
	{"GGET", modeDst, modeNone, modeStr, "index"},
	{"GSET", modeVar, modeNone, modeStr, "newindex"},
	{"TGETV", modeDst, modeVar, modeVar, "index"},
	{"TGETS", modeDst, modeVar, modeStr, "index"},
	{"TGETB", modeDst, modeVar, modeLit, "index"},
	{"TGETR", modeDst, modeVar, modeVar, "index"},
	{"TSETV", modeVar, modeVar, modeVar, "newindex"},
	{"TSETS", modeVar, modeVar, modeStr, "newindex"},
	{"TSETB", modeVar, modeVar, modeLit, "newindex"},
	{"TSETM", modeBase, modeNone, modeNum, "newindex"},
	{"TSETR", modeVar, modeVar, modeVar, "newindex"},

	// Calls and varargs (T: tail call).
	{"CALLM", modeBase, modeLit, modeLit, "call"},
	{"CALL", modeBase, modeLit, modeLit, "call"},
	{"CALLMT", modeBase, modeNone, modeLit, "call"},
	{"CALLT", modeBase, modeNone, modeLit, "call"},
	{"ITERC", modeBase, modeLit, modeLit, "call"},
	{"ITERN", modeBase, modeLit, modeLit, "call"},
	{"VARG", modeBase, modeLit, modeLit, ""},
	{"ISNEXT", modeBase, modeNone, modeJump, ""},

	// Returns.
	{"RETM", modeBase, modeNone, modeLit, ""},
	{"RET", modeRbase, modeNone, modeLit, ""},
	{"RET0", modeRbase, modeNone, modeLit, ""},
	{"RET1", modeRbase, modeNone, modeLit, ""},

	// Loops and branches (I/J: interpreter/JIT).
	{"FORI", modeBase, modeNone, modeJump, ""},
	{"JFORI", modeBase, modeNone, modeJump, ""},
	{"FORL", modeBase, modeNone, modeJump, ""},
	{"IFORL", modeBase, modeNone, modeJump, ""},
	{"JFORL", modeBase, modeNone, modeLit, ""},
	{"ITERL", modeBase, modeNone, modeJump, ""},
	{"IITERL", modeBase, modeNone, modeJump, ""},
	{"JITERL", modeBase, modeNone, modeLit, ""},
	{"LOOP", modeRbase, modeNone, modeJump, ""},
	{"ILOOP", modeRbase, modeNone, modeJump, ""},
	{"JLOOP", modeRbase, modeNone, modeLit, ""},
	{"JMP", modeRbase, modeNone, modeJump, ""},

	// Function headers.
	{"FUNCF", modeRbase, modeNone, modeNone, ""},
	{"IFUNCF", modeRbase, modeNone, modeNone, ""},
	{"JFUNCF", modeRbase, modeNone, modeLit, ""},
	{"FUNCV", modeRbase, modeNone, modeNone, ""},
	{"IFUNCV", modeRbase, modeNone, modeNone, ""},
	{"JFUNCV", modeRbase, modeNone, modeLit, ""},
	{"FUNCC", modeRbase, modeNone, modeNone, ""},
	{"FUNCCW", modeRbase, modeNone, modeNone, ""},
}
