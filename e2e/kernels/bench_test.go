package kernels

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
	"github.com/ngxprobe/ngxprobe/internal/vmtest"
)

// hitcostVariants are the variants of bench/hitcost.sh measured on each
// kernel: the floor, the 8-field event, and a return probe.
const hitcostVariants = "none empty_uprobe ngxprobe_8_fields_3_hops ngxprobe_uretprobe"

// BenchmarkKernels measures, inside each guest, the default set's attach
// time and bench/hitcost.sh's per-hit ratios against the empty-uprobe
// floor. Under TCG absolute times mean nothing; compare the ratios.
//
//	go test ./e2e/kernels -run '^$' -bench Kernels -benchtime 1x
func BenchmarkKernels(b *testing.B) {
	nginxtest.RequireRoot(b)
	root := moduleRoot(b)
	inst := nginxtest.Build(b, nginxtest.VariantO2)
	dir := b.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, c := range [][]string{
		{"go", "build", "-o", filepath.Join(dir, "ngxprobe"), "./cmd/ngxprobe"},
		{"go", "build", "-o", filepath.Join(dir, "emptyprobe"), "./bench/emptyprobe"},
		{"gcc", "-O2", "-g", "-fomit-frame-pointer", "-o", filepath.Join(dir, "loop"), "bench/hitcost/loop.c"},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOAMD64=v1")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	script := fmt.Sprintf(guestNginx, inst.Binary) + fmt.Sprintf(`
for i in 1 2 3; do %s/ngxprobe run -p $MASTER --duration 1s 2>&1 >/dev/null | grep -o 'in [0-9]* ms'; done
kill $MASTER
cd %s && PREBUILT=%s VARIANTS=%q RUNS=3 CALLS=20000 bash bench/hitcost.sh 2>&1 | grep -v '^#'
`, dir, root, dir, hitcostVariants)
	for i := 0; i < b.N; i++ {
		for _, k := range vmtest.Kernels(b) {
			res := vmtest.Run(b, k, vmtest.RunOptions{Argv: []string{"/bin/sh", "-c", script}, Timeout: 15 * time.Minute})
			if res.ExitCode != 0 {
				b.Fatalf("%s: exit %d (%v)\n%s\n%s", k.Name, res.ExitCode, res.Err, res.Output, tail(res.Console, 30))
			}
			fmt.Printf("%s (%s, %s): attach times, then hitcost:\n%s\n", k.Name, k.Release, res.Accel, res.Output)
		}
	}
}
