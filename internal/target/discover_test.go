package target

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ngxprobe/ngxprobe/internal/nginxtest"
)

// nginxBinary is an nginx to judge by content: the test build.
func nginxBinary(t *testing.T) string {
	return nginxtest.Build(t, nginxtest.VariantO2).Binary
}

func TestDiscoverMasters(t *testing.T) {
	nginx := nginxBinary(t)
	// A second file with nginx's content: another inode, another binary.
	copyPath := filepath.Join(t.TempDir(), "openresty")
	data, err := os.ReadFile(nginx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, data, 0o755); err != nil {
		t.Fatal(err)
	}
	root := fakeProc(t, map[int][2]string{
		10: {"nginx: master process", "1"},
		11: {"nginx: worker process", "10"},
		20: {"nginx: master process nginx -g daemon off;", "5"}, // pid 1 of a container, under a shim
		21: {"nginx: worker process", "20"},
		30: {"my-gateway", "1"}, // renamed: nginx by content
		31: {"worker", "30"},
		40: {"sleep 30", "1"},
		5:  {"containerd-shim-runc-v2", "1"},
	})
	link := func(pid int, target string) {
		p := filepath.Join(root, strconv.Itoa(pid), "exe")
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range []int{10, 11, 20, 21} {
		link(pid, nginx)
	}
	link(30, copyPath)
	link(31, copyPath)
	link(40, "/usr/bin/sleep")
	link(5, "/usr/bin/sleep")
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	os.WriteFile(filepath.Join(root, "20", "cgroup"), []byte("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-"+id+".scope\n"), 0o644)
	os.WriteFile(filepath.Join(root, "20", "environ"), []byte("PATH=/bin\x00KUBERNETES_SERVICE_HOST=10.0.0.1\x00HOSTNAME=web-7d9f\x00POD_NAMESPACE=shop\x00CONTAINER_NAME=nginx\x00"), 0o644)

	d := NewDiscoverer(root)
	masters, err := d.Masters()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, m := range masters {
		pids = append(pids, m.PID)
	}
	if len(masters) != 3 || pids[0] != 10 || pids[1] != 20 || pids[2] != 30 {
		t.Fatalf("masters %v, want 10, 20 (in a container) and 30 (renamed)", pids)
	}
	if masters[0].Binary != masters[1].Binary || masters[0].Binary == masters[2].Binary {
		t.Errorf("binaries %v %v %v: want 10 and 20 to share one, 30 its own", masters[0].Binary, masters[1].Binary, masters[2].Binary)
	}
	want := Labels{ContainerID: id, PodName: "web-7d9f", PodNamespace: "shop", ContainerName: "nginx"}
	if masters[1].Labels != want {
		t.Errorf("labels %+v, want %+v", masters[1].Labels, want)
	}
	if masters[0].Labels != (Labels{}) {
		t.Errorf("host master has labels %+v", masters[0].Labels)
	}
	if got := MasterOf(root, 21); got != 20 {
		t.Errorf("MasterOf(worker 21) = %d, want 20", got)
	}
	if got := MasterOf(root, 20); got != 20 {
		t.Errorf("MasterOf(master 20) = %d, want itself (its parent is the shim)", got)
	}
	// The verdicts are cached by executable: a second scan reads no ELF.
	if len(d.nginx) != 3 {
		t.Errorf("%d executables judged, want 3 (nginx, its copy, sleep)", len(d.nginx))
	}
}
