package debuginfod

import (
	"os"
	"path/filepath"
	"time"
)

// cleanIntervalFile is the file elfutils creates at the cache's root on
// every query: its content is the cleaning interval in seconds, its mtime
// the last cleaning.
const (
	cleanIntervalFile    = "cache_clean_interval_s"
	cleanIntervalDefault = "86400" // 1 day, written without a newline
)

// prepareCache makes the cache directory and its cache_clean_interval_s
// file as elfutils does: the directory with mode 0777 (less the umask),
// its parent 0700 when missing (elfutils' mkdir of $XDG_CACHE_HOME), the
// file 0666 (less the umask) holding "86400". A file already there is
// left alone.
func prepareCache(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o777); err != nil && !os.IsExist(err) {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, cleanIntervalFile), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		if _, err := f.WriteString(cleanIntervalDefault); err != nil {
			return err
		}
	}
	return f.Close()
}

// cached reports whether path is a cached ELF file with the build-id. An
// empty file (elfutils' negative hit) or a file that fails the check is a
// miss; a fetch then renames its download over it.
func cached(path, id string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return false
	}
	return checkELF(f, fi.Size(), id) == nil
}

// commit makes the checked download tmp the cache entry target: read-only
// (0400, as elfutils), synced, with mtime and atime set to mtime, then
// renamed into place and its directory synced. tmp is closed.
func commit(tmp *os.File, target string, mtime time.Time) error {
	if err := tmp.Chmod(0o400); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	_ = os.Chtimes(tmp.Name(), mtime, mtime) // best effort, as elfutils' futimes
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(target)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
