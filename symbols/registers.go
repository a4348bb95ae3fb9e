package symbols

import (
	"fmt"

	"github.com/go-delve/delve/pkg/dwarf/regnum"
)

// x86-64 DWARF register numbers (System V AMD64 ABI, figure 3.36, as
// delve's regnum names them). Every register number in this module uses
// them: parameter locations, CFI, stack captures, write sites and the
// generated probe programs.
const (
	RegRAX = regnum.AMD64_Rax
	RegRDX = regnum.AMD64_Rdx
	RegRCX = regnum.AMD64_Rcx
	RegRBX = regnum.AMD64_Rbx
	RegRSI = regnum.AMD64_Rsi
	RegRDI = regnum.AMD64_Rdi
	RegRBP = regnum.AMD64_Rbp
	RegRSP = regnum.AMD64_Rsp
	RegR8  = regnum.AMD64_R8
	RegR9  = regnum.AMD64_R9
	RegR10 = regnum.AMD64_R10
	RegR11 = regnum.AMD64_R11
	RegR12 = regnum.AMD64_R12
	RegR13 = regnum.AMD64_R13
	RegR14 = regnum.AMD64_R14
	RegR15 = regnum.AMD64_R15
	// RegRIP is the instruction pointer, and the return-address column of
	// x86-64 CFI.
	RegRIP = regnum.AMD64_Rip
)

var regNames = [...]string{
	RegRAX: "rax", RegRDX: "rdx", RegRCX: "rcx", RegRBX: "rbx",
	RegRSI: "rsi", RegRDI: "rdi", RegRBP: "rbp", RegRSP: "rsp",
	RegR8: "r8", RegR9: "r9", RegR10: "r10", RegR11: "r11",
	RegR12: "r12", RegR13: "r13", RegR14: "r14", RegR15: "r15",
	RegRIP: "rip",
}

// RegName returns the name of a general register or rip by its DWARF
// number ("rbx" for 3), or "regN" for any other number.
func RegName(n int) string {
	if n >= 0 && n < len(regNames) {
		return regNames[n]
	}
	return fmt.Sprintf("reg%d", n)
}
