package vmtest

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// cpioFile is one entry of an initramfs: a regular file, a directory, a
// symlink (Data is the target) or a character device.
type cpioFile struct {
	Name         string // absolute path in the archive, e.g. "/bin/busybox"
	Mode         fs.FileMode
	Data         []byte
	Major, Minor uint32 // of a device
}

// writeCPIO returns the files as an uncompressed "newc" cpio archive (what
// the kernel unpacks as its initramfs), with each file's parent directories
// added when missing, sorted by name.
func writeCPIO(files []cpioFile) ([]byte, error) {
	byName := map[string]cpioFile{}
	for _, f := range files {
		name := path.Clean("/" + f.Name)
		if name == "/" {
			continue
		}
		f.Name = name
		byName[name] = f
		for dir := path.Dir(name); dir != "/"; dir = path.Dir(dir) {
			if _, ok := byName[dir]; !ok {
				byName[dir] = cpioFile{Name: dir, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)

	var b bytes.Buffer
	ino := uint32(1)
	for _, n := range names {
		f := byName[n]
		mode := uint32(f.Mode.Perm())
		var data []byte
		switch {
		case f.Mode.IsDir():
			mode |= 0o040000
		case f.Mode&fs.ModeSymlink != 0:
			mode |= 0o120000
			data = f.Data
		case f.Mode&fs.ModeCharDevice != 0:
			mode |= 0o020000
		case f.Mode.IsRegular():
			mode |= 0o100000
			data = f.Data
		default:
			return nil, fmt.Errorf("cpio: %s: unsupported mode %v", n, f.Mode)
		}
		nlink := uint32(1)
		if f.Mode.IsDir() {
			nlink = 2
		}
		writeCPIOHeader(&b, ino, mode, nlink, uint32(len(data)), f.Major, f.Minor, strings.TrimPrefix(n, "/"))
		b.Write(data)
		pad4(&b)
		ino++
	}
	writeCPIOHeader(&b, 0, 0, 1, 0, 0, 0, "TRAILER!!!")
	return b.Bytes(), nil
}

func writeCPIOHeader(b *bytes.Buffer, ino, mode, nlink, size, rmajor, rminor uint32, name string) {
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize, check
	fmt.Fprintf(b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	pad4(b)
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}
