// Package symbols reads an nginx binary once and answers the questions a
// tracer asks of it: where a function's instances start (as file offsets for
// uprobes), where their parameters live at entry, how a C type is laid out,
// and how a member path such as r->connection->read->eof compiles into a
// sequence of memory reads. It also says what is at a pc (its machine
// code, Code; its unit, subprogram, inlined calls and variables,
// InlineChain) and where a struct lives (the globals of its type,
// GlobalsOfType; the structs that embed it, Embeddings).
//
// It is the module's one DWARF walker: other packages ask it rather than
// walk the DIE tree themselves. Registers are numbered the x86-64 DWARF way
// everywhere, by the RegRAX ... RegR15 and RegRIP constants.
//
// It uses the standard library's debug/elf and debug/dwarf. Location lists
// and location expressions are decoded here because the entry PC of a
// function (or of a copy GCC inlined, InlinedInstances) is the only point
// we need them at, and because GCC's DWARF 5
// output (DW_LLE_GNU_view_pair, DW_OP_entry_value) is outside what other
// readers handle.
package symbols
