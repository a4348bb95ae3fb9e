package debuginfod_test

import (
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Build-ids of the hand-made ELF files.
const (
	testID  = "0123456789abcdef0123456789abcdef01234567"
	otherID = "fedcba9876543210fedcba9876543210fedcba98"
)

// testELF is a minimal ELF64 little-endian file with a GNU build-id note
// section and a .debug_info section of payload bytes: enough for
// debug/elf, readelf and the client's checks.
func testELF(buildID string, payload int) []byte {
	id, err := hex.DecodeString(buildID)
	if err != nil {
		panic(err)
	}
	le := binary.LittleEndian
	note := le.AppendUint32(nil, 4)
	note = le.AppendUint32(note, uint32(len(id)))
	note = le.AppendUint32(note, 3) // NT_GNU_BUILD_ID
	note = append(append(note, "GNU\x00"...), id...)
	for len(note)%4 != 0 {
		note = append(note, 0)
	}
	const strtab = "\x00.note.gnu.build-id\x00.debug_info\x00.shstrtab\x00"
	name := func(s string) uint32 { return uint32(strings.Index(strtab, "\x00"+s+"\x00") + 1) }

	f := make([]byte, 64) // the ELF header, written last
	noteOff := len(f)
	f = append(f, note...)
	infoOff := len(f)
	for i := range payload {
		f = append(f, byte(i*7+i>>8))
	}
	strOff := len(f)
	f = append(f, strtab...)
	for len(f)%8 != 0 {
		f = append(f, 0)
	}
	shoff := len(f)
	section := func(name, typ uint32, flags uint64, off, size int, align uint64) {
		f = le.AppendUint32(f, name)
		f = le.AppendUint32(f, typ)
		f = le.AppendUint64(f, flags)
		f = le.AppendUint64(f, 0) // addr
		f = le.AppendUint64(f, uint64(off))
		f = le.AppendUint64(f, uint64(size))
		f = le.AppendUint64(f, 0) // link, info
		f = le.AppendUint64(f, align)
		f = le.AppendUint64(f, 0) // entsize
	}
	section(0, 0, 0, 0, 0, 0)
	section(name(".note.gnu.build-id"), uint32(elf.SHT_NOTE), uint64(elf.SHF_ALLOC), noteOff, len(note), 4)
	section(name(".debug_info"), uint32(elf.SHT_PROGBITS), 0, infoOff, payload, 1)
	section(name(".shstrtab"), uint32(elf.SHT_STRTAB), 0, strOff, len(strtab), 1)

	h := f[:0]
	h = append(h, 0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	h = le.AppendUint16(h, uint16(elf.ET_DYN))
	h = le.AppendUint16(h, uint16(elf.EM_X86_64))
	h = le.AppendUint32(h, 1)
	h = le.AppendUint64(h, 0) // entry
	h = le.AppendUint64(h, 0) // phoff
	h = le.AppendUint64(h, uint64(shoff))
	h = le.AppendUint32(h, 0)  // flags
	h = le.AppendUint16(h, 64) // ehsize
	h = le.AppendUint16(h, 56) // phentsize
	h = le.AppendUint16(h, 0)  // phnum
	h = le.AppendUint16(h, 64) // shentsize
	h = le.AppendUint16(h, 4)  // shnum
	h = le.AppendUint16(h, 3)  // shstrndx
	return f
}

// fileBuildID reads the GNU build-id of an ELF file with debug/elf.
func fileBuildID(t testing.TB, path string) string {
	t.Helper()
	id, err := buildIDOf(path)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func buildIDOf(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		return "", fmt.Errorf("%s: no .note.gnu.build-id", path)
	}
	data, err := s.Data()
	if err != nil || len(data) < 16 {
		return "", fmt.Errorf("%s: build-id note: %v", path, err)
	}
	nameSz := f.ByteOrder.Uint32(data)
	descSz := f.ByteOrder.Uint32(data[4:])
	start := 12 + (nameSz+3)&^3
	return hex.EncodeToString(data[start : start+descSz]), nil
}

// cacheFiles lists the cache below dir: "path mode size" for each file and
// directory, sorted (WalkDir's order).
func cacheFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		out = append(out, rel+" "+fi.Mode().String()+" "+itoa(size))
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// requireNoEntry fails unless the cache below dir holds nothing but
// elfutils' cache_clean_interval_s: no entry, no build-id directory and no
// temporary file.
func requireNoEntry(t testing.TB, dir string) {
	t.Helper()
	for _, f := range cacheFiles(t, dir) {
		if !strings.HasPrefix(f, "cache_clean_interval_s ") {
			t.Errorf("left in the cache: %s", f)
		}
	}
}

// fakeServer is a stand-in debuginfod on loopback: handle answers every
// request; it counts them.
type fakeServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newFakeServer(t testing.TB, handle http.HandlerFunc) *fakeServer {
	t.Helper()
	s := &fakeServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// serveFile answers every request with body, as debuginfod does (with
// Content-Length, X-DEBUGINFOD-SIZE and Last-Modified).
func serveFile(body []byte, modified time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-DEBUGINFOD-SIZE", itoa(int64(len(body))))
		w.Header().Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Length", itoa(int64(len(body))))
		w.Write(body)
	}
}

// closedPort is a loopback URL nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}
