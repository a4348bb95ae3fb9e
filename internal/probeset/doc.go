// Package probeset holds ngxprobe's built-in probe sets as scripts: the
// default set that run uses without a script, the close stacks that
// --stack adds, and the scripts that --probe flags stand for. Everything
// goes through one front end, package script; this package only writes
// its text.
package probeset
