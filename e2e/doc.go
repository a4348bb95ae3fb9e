// Package e2e holds end-to-end tests of the ngxprobe command against live
// nginx processes started by internal/nginxtest. The tests build ngxprobe
// once (TestMain), run it as a child process with -o json, and check what
// it prints against nginx's own error and access logs.
//
// Most tests need root (uprobes); without root they are skipped, and with
// CI=true they fail. The leftover checks use bpftool (see
// internal/nginxtest/setup-deps.sh).
//
//	go test ./e2e/ -count=1 -v
package e2e
