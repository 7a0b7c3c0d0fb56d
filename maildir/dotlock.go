package maildir

import (
	"context"
	"errors"
	"fmt"
	"github.com/roost-mail/roost/backend"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Dotlocks are the only cross-process locks Roost uses, because they work
// on NFS where flock does not (Dovecot's file_dotlock_create works the same
// way). A lock file "<name>.lock" holds "<pid>:<host>". It is created by
// writing a unique temporary file and hard-linking it to the lock name,
// which is atomic on NFS; the link count tells success even when the
// server's reply to link() was lost. A lock is stale, and may be broken,
// when its holder is a dead process on this host or its mtime is older
// than the stale time (holders of long locks touch it).

// errLockTimeout is backend.ErrLocked, so that clients hear "in use, try
// again" rather than a server error.
var errLockTimeout = fmt.Errorf("timed out waiting for lock (%w)", backend.ErrLocked)

type dotlock struct {
	path    string
	content string // "" when written on a full disk
	ino     uint64 // identifies our lock file when content is ""
}

// lockContent identifies this process in lock files.
func lockContent(g *nameGen) string { return g.pid + ":" + g.host }

// tryDotlock makes one attempt. It returns (nil, nil) if another live
// holder has the lock.
func tryDotlock(path string, stale time.Duration, g *nameGen) (*dotlock, error) {
	content := lockContent(g)
	for attempt := 0; attempt < 3; attempt++ {
		tmp := path + ".tmp." + g.next()
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create lock temp file: %w", err)
		}
		_, werr := f.WriteString(content + "\n")
		if errors.Is(werr, syscall.ENOSPC) {
			// A full disk may still take an empty file: lock without the
			// holder's name (it then goes stale by mtime only), so that
			// readers such as POP3 keep working while the disk is full.
			werr = f.Truncate(0)
			content = ""
		}
		cerr := f.Close()
		if werr != nil || cerr != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("write lock temp file %s: %w", tmp, errors.Join(werr, cerr))
		}
		lerr := os.Link(tmp, path)
		ok := lerr == nil
		if !ok {
			if st, err := os.Stat(tmp); err == nil {
				if sys, _ := st.Sys().(*syscall.Stat_t); sys != nil && sys.Nlink == 2 {
					ok = true
				}
			}
		}
		if !ok && !errors.Is(lerr, fs.ErrExist) {
			// A file system without hard links: fall back to O_EXCL.
			ok, lerr = createExcl(path, content)
		}
		os.Remove(tmp)
		if ok {
			lk := &dotlock{path: path, content: content}
			if st, err := os.Stat(path); err == nil {
				lk.ino = idOf(st).ino
			}
			return lk, nil
		}
		if lerr != nil && !errors.Is(lerr, fs.ErrExist) {
			return nil, fmt.Errorf("create lock %s: %w", path, lerr)
		}
		if !lockIsStale(path, stale, g) {
			return nil, nil
		}
		// Break the stale lock and try again.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale lock %s: %w", path, err)
		}
	}
	return nil, nil
}

func createExcl(path, content string) (bool, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	_, werr := f.WriteString(content + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(path)
		return false, err
	}
	return true, nil
}

// lockIsStale reports whether the lock at path may be broken.
func lockIsStale(path string, stale time.Duration, g *nameGen) bool {
	st, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, fs.ErrNotExist)
	}
	if time.Since(st.ModTime()) > stale {
		return true
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	pidStr, host, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok || host != g.host {
		return false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	// Signal 0 tests existence: ESRCH means the holder died.
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// acquireDotlock waits up to wait for the lock.
func acquireDotlock(ctx context.Context, path string, stale, wait time.Duration, g *nameGen) (*dotlock, error) {
	deadline := time.Now().Add(wait)
	delay := 2 * time.Millisecond
	for {
		l, err := tryDotlock(path, stale, g)
		if err != nil || l != nil {
			return l, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w %s (held by another process; remove it if no Roost or Dovecot process is running)", errLockTimeout, path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// touch refreshes the lock's mtime so that it does not look stale.
func (l *dotlock) touch() error {
	now := time.Now()
	return os.Chtimes(l.path, now, now)
}

// release removes the lock if it is still ours.
func (l *dotlock) release() error {
	b, err := os.ReadFile(l.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("lock %s vanished while held (broken as stale?)", l.path)
		}
		return err
	}
	if got := strings.TrimSpace(string(b)); got != l.content || (got == "" && statID(l.path).ino != l.ino) {
		return fmt.Errorf("lock %s was taken over by %q while held", l.path, strings.TrimSpace(string(b)))
	}
	return os.Remove(l.path)
}
