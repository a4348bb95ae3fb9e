// Package kernels runs ngxprobe's end-to-end tests on the kernels users
// run: Debian's 5.10 (bullseye, like Ubuntu 22.04's 5.15 era), 6.1
// (bookworm, Amazon Linux 2023) and 6.12 (bookworm-backports), each booted
// in QEMU by internal/vmtest, beside the host's own kernel. It prints one
// line per kernel and feature (works, degraded with the reason, or fails)
// and checks that the README's kernel table says the same.
package kernels
