// Package symbols reads an nginx binary once and answers the questions a
// tracer asks of it: where a function's instances start (as file offsets for
// uprobes), where their parameters live at entry, how a C type is laid out,
// and how a member path such as r->connection->read->eof compiles into a
// sequence of memory reads.
//
// It uses the standard library's debug/elf and debug/dwarf. Location lists
// and location expressions are decoded here because the entry PC of a
// function is the only point we need them at, and because GCC's DWARF 5
// output (DW_LLE_GNU_view_pair, DW_OP_entry_value) is outside what other
// readers handle.
package symbols
