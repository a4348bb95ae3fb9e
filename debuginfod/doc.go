// Package debuginfod fetches debug files by build-id from debuginfod
// servers, the way elfutils' libdebuginfod (and so gdb, debuginfod-find,
// perf, systemtap) does, in pure Go (ngxprobe builds with CGO_ENABLED=0).
//
// A typical caller:
//
//	c, err := debuginfod.FromEnv() // DEBUGINFOD_URLS, _CACHE_PATH, _TIMEOUT, _MAXSIZE
//	if err != nil {
//		return err
//	}
//	if !c.Enabled() {
//		return nil // DEBUGINFOD_URLS is empty: nothing to ask
//	}
//	c.Progress = os.Stderr
//	path, err := c.Fetch(ctx, debuginfod.Request{BuildID: id, Name: "/usr/sbin/nginx"})
//	switch {
//	case errors.Is(err, debuginfod.ErrNotFound):
//		// no server has it
//	case err != nil:
//		// server down, timeout, too large, wrong file, ...
//	}
//
// # The cache
//
// Files are cached in elfutils' own layout, so a file gdb or
// debuginfod-find fetched is used without a request, and the other way
// round:
//
//	<cache>/cache_clean_interval_s     "86400" (no newline), created if missing
//	<cache>/<build-id>/                mode 0700, lower-case hex build-id
//	<cache>/<build-id>/debuginfo       mode 0400, mtime from Last-Modified
//	<cache>/<build-id>/executable
//
// The cache directory is $DEBUGINFOD_CACHE_PATH, else
// $HOME/.debuginfod_client_cache when that exists (elfutils' old place),
// else $XDG_CACHE_HOME/debuginfod_client, else
// $HOME/.cache/debuginfod_client (see [DefaultCacheDir]).
//
// A download goes to a temporary file beside its final name
// ("debuginfo.NNNN", as elfutils' mkstemp "debuginfo.XXXXXX"), is checked
// to be an ELF file whose GNU build-id note is the requested build-id, is
// synced and then renamed into place: a partial, truncated or wrong
// download is never returned and never leaves a cache entry. A cached file
// is checked the same way (a cheap read of the ELF headers and notes)
// before it is returned.
//
// # Differences from elfutils
//
// Servers are asked one after the other, in the order of URLs, not in
// parallel; every server's error is kept in the returned error. A server
// that answers with a file that is not the requested one is skipped for
// the next. There are no retries (elfutils retries failed queries
// DEBUGINFOD_RETRY_LIMIT times) and no overall deadline
// (DEBUGINFOD_MAXTIME): use the context. Timeout is the longest wait for
// any byte (the response or the next body bytes); elfutils instead gives
// up when the transfer stays below 100 KiB/s for DEBUGINFOD_TIMEOUT
// seconds. A 404 does not leave elfutils' empty "negative hit" file in the
// cache, and such a file left by elfutils is taken as a plain miss (the
// servers are asked again), not as "not found". The cache is never
// cleaned: elfutils clients sharing it clean it (cache_clean_interval_s,
// max_unused_age_s). Only http and https URLs are supported (elfutils also
// takes file://), and there is no source or section lookup.
package debuginfod
