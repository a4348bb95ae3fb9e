package target

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/ngxprobe/ngxprobe/symbols"
)

// BinaryID identifies an executable file: its device and inode. Uprobes
// are per inode, so every master running one file is traced by one
// attach, whichever container or mount namespace it runs in.
type BinaryID struct{ Dev, Ino uint64 }

func (id BinaryID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// Master is an nginx master process found on the host (--all-nginx).
type Master struct {
	PID    int
	Binary BinaryID
	// Exe opens the executable: procRoot/PID/exe, which reaches a file in
	// another mount namespace.
	Exe string
	// Display is the executable's path in the master's mount namespace.
	Display string
	Labels  Labels
}

// Labels say where a master runs: its container, and its Kubernetes pod
// when the process's environment or downward-API files say so.
type Labels struct {
	ContainerID   string
	PodName       string
	PodNamespace  string
	ContainerName string
}

// Discoverer finds every nginx master on the host by content: a process
// is nginx when its executable defines nginx's globals (symbols.KindOf),
// whatever the file or process is called. Each executable is judged once,
// by its BinaryID.
type Discoverer struct {
	// ProcRoot is /proc, or a fake one in tests.
	ProcRoot string
	nginx    map[BinaryID]bool
}

// NewDiscoverer reads processes under procRoot ("" is /proc).
func NewDiscoverer(procRoot string) *Discoverer {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Discoverer{ProcRoot: procRoot, nginx: map[BinaryID]bool{}}
}

// maxJudged bounds the executables a Discoverer remembers: a host that
// runs many short-lived programs must not grow it without bound.
const maxJudged = 4096

// process is what Masters reads of one process.
type process struct {
	pid, ppid int
	binary    BinaryID
}

// Masters lists the nginx masters running now, by pid. A master is an
// nginx process whose parent is not a process of the same executable
// (workers are its children); in a container it is often pid 1 of its
// namespace, the child of a container runtime's shim.
func (d *Discoverer) Masters() ([]Master, error) {
	entries, err := os.ReadDir(d.ProcRoot)
	if err != nil {
		return nil, err
	}
	procs := map[int]process{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe := filepath.Join(d.ProcRoot, e.Name(), "exe")
		var st syscall.Stat_t
		if err := syscall.Stat(exe, &st); err != nil {
			continue // a kernel thread, an exited process, or no access
		}
		id := BinaryID{Dev: st.Dev, Ino: st.Ino}
		isNginx, known := d.nginx[id]
		if !known {
			kind, err := kindOf(exe)
			isNginx = err == nil && kind == symbols.Nginx
			if len(d.nginx) >= maxJudged {
				clear(d.nginx)
			}
			d.nginx[id] = isNginx
		}
		if !isNginx {
			continue
		}
		ppid, ok := parentOf(d.ProcRoot, pid)
		if !ok {
			continue
		}
		procs[pid] = process{pid: pid, ppid: ppid, binary: id}
	}
	var out []Master
	for _, p := range procs {
		if parent, ok := procs[p.ppid]; ok && parent.binary == p.binary {
			continue // a worker (or a cache manager) of a master listed
		}
		dir := filepath.Join(d.ProcRoot, strconv.Itoa(p.pid))
		display, _ := os.Readlink(filepath.Join(dir, "exe"))
		out = append(out, Master{
			PID: p.pid, Binary: p.binary, Exe: filepath.Join(dir, "exe"),
			Display: strings.TrimSuffix(display, " (deleted)"), Labels: LabelsOf(d.ProcRoot, p.pid),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

// parentOf reads a process's parent pid from its stat.
func parentOf(procRoot string, pid int) (int, bool) {
	stat, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// The command name is in parentheses and may hold anything.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// MasterOf returns the master of a traced process: itself when its parent
// runs another executable, else its parent (a worker's master).
func MasterOf(procRoot string, pid int) int {
	if procRoot == "" {
		procRoot = "/proc"
	}
	ppid, ok := parentOf(procRoot, pid)
	if !ok || ppid <= 1 {
		return pid
	}
	var self, parent syscall.Stat_t
	if syscall.Stat(filepath.Join(procRoot, strconv.Itoa(pid), "exe"), &self) != nil ||
		syscall.Stat(filepath.Join(procRoot, strconv.Itoa(ppid), "exe"), &parent) != nil ||
		self.Dev != parent.Dev || self.Ino != parent.Ino {
		return pid
	}
	return ppid
}

// containerID finds a 64-hex container ID in a cgroup path: Docker
// (docker-ID.scope, /docker/ID), containerd and CRI-O
// (cri-containerd-ID.scope, crio-ID.scope), Kubernetes' kubepods paths.
var containerID = regexp.MustCompile(`([0-9a-f]{64})`)

// maxLabelFile bounds what LabelsOf reads of a process's files: a hostile
// process controls its environment.
const maxLabelFile = 64 << 10

// LabelsOf reads where process pid runs: the container ID from its
// cgroup, and, in Kubernetes (KUBERNETES_SERVICE_HOST in its
// environment), the pod from its environment (POD_NAME, POD_NAMESPACE,
// CONTAINER_NAME, as a downward-API env section sets them; HOSTNAME is
// the pod's name) or the service account's namespace file.
func LabelsOf(procRoot string, pid int) Labels {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	var l Labels
	if cg := readBounded(filepath.Join(dir, "cgroup")); cg != nil {
		for _, line := range strings.Split(string(cg), "\n") {
			if m := containerID.FindAllString(line, -1); len(m) > 0 {
				l.ContainerID = m[len(m)-1]
			}
		}
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(readBounded(filepath.Join(dir, "environ")), []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	if _, ok := env["KUBERNETES_SERVICE_HOST"]; !ok {
		return l
	}
	l.PodName = first(env["POD_NAME"], env["HOSTNAME"])
	l.PodNamespace = env["POD_NAMESPACE"]
	if l.PodNamespace == "" {
		ns := readBounded(filepath.Join(dir, "root/var/run/secrets/kubernetes.io/serviceaccount/namespace"))
		l.PodNamespace = strings.TrimSpace(string(ns))
	}
	l.ContainerName = env["CONTAINER_NAME"]
	return l
}

func first(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// readBounded reads at most maxLabelFile bytes of a file; nil on error.
func readBounded(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxLabelFile))
	return b
}
