package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// virtiofsdPaths are where Debian puts virtiofsd: qemu-system-common's C
// daemon (bookworm, QEMU 7.2), or the virtiofsd package's (trixie on).
var virtiofsdPaths = []string{"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}

// Virtiofsd returns the virtiofsd executable: $NGXPROBE_VIRTIOFSD, or the
// first of Debian's paths that exists, or "virtiofsd" on $PATH.
func Virtiofsd() (string, error) {
	if p := os.Getenv("NGXPROBE_VIRTIOFSD"); p != "" {
		return p, nil
	}
	for _, p := range virtiofsdPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("virtiofsd"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no virtiofsd in %s or $PATH (setup-deps.sh vm installs qemu-system-x86)", strings.Join(virtiofsdPaths, ", "))
}

// virtiofsd is one running daemon serving a host directory to the guest.
type virtiofsd struct {
	cmd    *exec.Cmd
	socket string
	stderr *bytes.Buffer // read only after done
	mnt    string        // the read-only tree's mount point, removed by stop
	done   chan struct{}
}

// startVirtiofsd serves source on the vhost-user socket. With readOnly the
// daemon gets, in a mount namespace of its own, a recursive read-only bind
// of source (every host mount under it included), so nothing the guest does
// can write the host's files; without, the guest may write source.
func startVirtiofsd(bin, source, socket string, readOnly bool) (*virtiofsd, error) {
	d := &virtiofsd{socket: socket, stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cache := "auto"
	if readOnly {
		// Nothing changes the host's files under the guest: let it cache.
		cache = "always"
	}
	args := func(src string) []string {
		return []string{
			"--socket-path=" + socket,
			"-o", "source=" + src,
			"-o", "cache=" + cache,
			"-o", "sandbox=namespace",
			"-o", "log_level=warn",
		}
	}
	start := func(src string) error {
		d.cmd = exec.Command(bin, args(src)...)
		d.cmd.Stdout = d.stderr
		d.cmd.Stderr = d.stderr
		return d.cmd.Start()
	}
	var err error
	if readOnly {
		d.mnt, err = os.MkdirTemp("", "vmtest-root-")
		if err != nil {
			return nil, err
		}
		err = startInReadOnlyTree(source, d.mnt, func() error { return start(d.mnt) })
	} else {
		err = start(source)
	}
	if err != nil {
		d.removeMount()
		return nil, fmt.Errorf("virtiofsd for %s: %w", source, err)
	}
	go func() {
		d.cmd.Wait()
		close(d.done)
	}()
	// The socket exists once the daemon listens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return d, nil
		}
		select {
		case <-d.done:
			d.removeMount()
			return nil, fmt.Errorf("virtiofsd for %s exited: %s", source, strings.TrimSpace(d.stderr.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop() // waits for the daemon, so stderr is complete
			return nil, fmt.Errorf("virtiofsd for %s: no socket %s after 10s: %s", source, socket, d.stderr.String())
		}
	}
}

// stop ends the daemon. It exits by itself when its vhost-user connection
// closes: QEMU's, or, when QEMU never came, one stop opens and closes.
// Signals are the last resort: the daemon's sandbox is a child in a PID
// namespace, which a signalled parent leaves behind for init to reap.
func (d *virtiofsd) stop() {
	wait := func(timeout time.Duration) bool {
		select {
		case <-d.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	if !wait(2 * time.Second) {
		if c, err := net.DialTimeout("unix", d.socket, time.Second); err == nil {
			c.Close()
		}
		if !wait(3 * time.Second) {
			d.cmd.Process.Signal(unix.SIGTERM)
			if !wait(3 * time.Second) {
				d.cmd.Process.Kill()
				<-d.done
			}
		}
	}
	d.removeMount()
}

func (d *virtiofsd) removeMount() {
	if d.mnt != "" {
		// Only the daemon's namespace had the mount: here it is empty.
		os.Remove(d.mnt)
	}
}

// startInReadOnlyTree runs start (which starts a process) on a thread in a
// new mount namespace where mnt holds a recursive read-only clone of
// source's mount tree (open_tree + mount_setattr + move_mount). The process
// keeps the namespace; the thread ends with it, and the host's mounts are
// never touched.
func startInReadOnlyTree(source, mnt string, start func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in its own mount namespace, exits
		// with this goroutine.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("making / private: %w", err)
			}
			fd, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
			if err != nil {
				return fmt.Errorf("open_tree(%s): %w", source, err)
			}
			defer unix.Close(fd)
			attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
			if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
				return fmt.Errorf("mount_setattr(MOUNT_ATTR_RDONLY): %w", err)
			}
			if err := unix.MoveMount(fd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("move_mount to %s: %w", mnt, err)
			}
			return start()
		}()
	}()
	return <-errc
}

// socketDir makes a short directory for vhost-user sockets (sun_path holds
// 108 bytes; t.TempDir() paths can be longer).
func socketDir() (string, error) {
	dir, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return "", err
	}
	if len(filepath.Join(dir, "fs9.sock")) >= 100 {
		os.RemoveAll(dir)
		return "", errors.New("temporary directory path too long for a unix socket: set TMPDIR")
	}
	return dir, nil
}
