// Package flips turns a watch into probes and decodes their events into
// flips.
//
// A watch is an expression rooted at a connection c: c->read->FIELD,
// c->write->FIELD or c->FIELD (ParseExpr). Prepare resolves it against
// one binary into a Program: the field (watch.ResolveField), its write
// sites (watch.Scan) and the probes to attach, in one of three modes
// (Options.Mode):
//
//   - Exact probes the instructions that write the field. Sites whose
//     effect package watch models get one probe that computes the new
//     value; the others a probe before and one after the instruction.
//     Plain stores of 8 bytes or more whose base register is not known to
//     point at the watched type are left out (Program.Skipped says why)
//     unless Options.AllSites is set. No site found is ErrNoSites; sites
//     found but all left out is ErrNoProbedSites.
//   - Diff compares the field at functions where the connection is
//     reachable (Options.DiffPoints, DefaultDiffPoints when nil): a change
//     between two points is a flip, and a change between a function's
//     entry and its return happened inside it.
//   - Both runs the two side by side, to cross-check them.
//
// Every probe also reads the connection's identity (its number, its
// listening socket, which tells a client connection from an upstream one,
// the connection it logs as and the client address). Program.Decode
// turns an event of one of the program's probes into a Flip.
//
// The analysis (which instructions write the field and how) is package
// watch's; this package only puts it into probes and reads their events.
package flips
