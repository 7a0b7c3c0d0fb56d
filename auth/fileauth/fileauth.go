// Package fileauth authenticates users against a Dovecot-compatible
// passwd-file (https://doc.dovecot.org/ "passwd-file"):
//
//	user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
//
// so a site moving from Dovecot keeps its users file as it is. Supported
// schemes are listed in schemes.go; the verifier is chosen from the
// {SCHEME} prefix only (no prefix means CRYPT, as in Dovecot).
//
// Invariants:
//   - The file is re-read when its size, mtime or inode changes, checked at
//     most once per CheckInterval, on use; no restart is needed. Replace it
//     atomically (write a new file, rename it over the old one).
//   - A malformed line is logged with its line number and skipped; every
//     other user keeps working. An unreadable file makes every call fail
//     with auth.ErrUnavailable, never auth.ErrInvalidCredentials.
//   - Passwords and hashes never appear in logs or errors; secrets are
//     compared in constant time.
//   - Every login with a non-empty password checks one full hash: the
//     user's own, or, for a user who is unknown or may not log in, a decoy
//     of the file's most common scheme and cost (decoy.go), so the time a
//     login takes does not tell whether the user exists.
package fileauth

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roost-mail/roost/auth"
)

// Options configure an Authenticator.
type Options struct {
	// Path is the passwd-file (config auth.file.path).
	Path string
	// Logger receives reload reports and malformed-line warnings; nil
	// discards them.
	Logger *slog.Logger
	// CheckInterval is how often, at most, the file is checked for
	// changes; 0 means one second.
	CheckInterval time.Duration
}

// Authenticator is an auth.Authenticator and auth.Lister over a passwd-file.
// It is safe for concurrent use.
type Authenticator struct {
	opts Options // immutable
	log  *slog.Logger
	// verify checks a password against a stored hash: verifyPassword,
	// replaced by tests that count the work done.
	verify func(scheme, encoded, password string) (bool, error)

	users atomic.Pointer[table] // the last good parse; nil while unreadable

	mu        sync.Mutex // serialises checks and reloads
	lastCheck time.Time
	stamp     fileStamp
	loadErr   error // why the file is unavailable, or nil
}

// table is one parse of the file.
type table struct {
	byUser map[string]*entry
	names  []string // sorted
	// decoy is checked instead of a real hash when there is none (see
	// decoy.go), so timing does not reveal who has an account; nil if no
	// entry has a verifiable hash.
	decoy *decoy
}

// fileStamp identifies one version of the file.
type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

var _ interface {
	auth.Authenticator
	auth.Lister
} = (*Authenticator)(nil)

// New reads the passwd-file at opts.Path. It fails if the file cannot be
// read, so a wrong path is noticed at start-up.
func New(opts Options) (*Authenticator, error) {
	if opts.Path == "" {
		return nil, errors.New("fileauth: no passwd-file path: set auth.file.path")
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = time.Second
	}
	a := &Authenticator{opts: opts, log: opts.Logger, verify: verifyPassword}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("backend", "file", "path", opts.Path)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reloadLocked(time.Now())
	if a.loadErr != nil {
		return nil, a.loadErr
	}
	return a, nil
}

// current returns the user table, re-reading the file if it changed.
func (a *Authenticator) current() (*table, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now(); now.Sub(a.lastCheck) >= a.opts.CheckInterval {
		a.lastCheck = now
		st, err := stat(a.opts.Path)
		if err != nil || st != a.stamp || a.loadErr != nil {
			a.reloadLocked(now)
		}
	}
	if a.loadErr != nil {
		return nil, a.loadErr
	}
	return a.users.Load(), nil
}

func stat(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = sys.Ino
	}
	return s, nil
}

// reloadLocked reads the file. The stamp is taken before reading, so a
// write racing with the read changes the stamp and causes another reload.
func (a *Authenticator) reloadLocked(now time.Time) {
	a.lastCheck = now
	st, err := stat(a.opts.Path)
	var t *table
	if err == nil {
		t, err = a.read()
	}
	if err != nil {
		err = fmt.Errorf("%w: passwd-file %s: %w (check that it exists and is readable by this daemon)", auth.ErrUnavailable, a.opts.Path, err)
		if a.loadErr == nil || a.loadErr.Error() != err.Error() {
			a.log.Error("passwd-file unreadable; logins fail with a temporary error", "err", err)
		}
		a.loadErr, a.stamp = err, fileStamp{}
		a.users.Store(nil)
		return
	}
	a.loadErr, a.stamp = nil, st
	a.users.Store(t)
	attrs := []any{"users", len(t.names)}
	if d := t.decoy; d != nil {
		// Users with another kind of hash are the ones login timing can
		// reveal (see decoy.go): admins may rehash them.
		attrs = append(attrs, "usual_hash", d.class, "other_hashes", d.others)
	}
	a.log.Info("passwd-file loaded", attrs...)
}

func (a *Authenticator) read() (*table, error) {
	f, err := os.Open(a.opts.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return a.parse(f)
}

// maxLine bounds one line; longer lines are reported and skipped.
const maxLine = 64 << 10

func (a *Authenticator) parse(r io.Reader) (*table, error) {
	t := &table{byUser: map[string]*entry{}}
	var entries []*entry // in file order
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		tooLong := errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of the line
			_, err = br.ReadSlice('\n')
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		if tooLong {
			a.log.Warn("passwd-file line skipped: longer than 64 KiB", "line", n)
		} else if len(line) > 0 {
			if e := a.addLine(t, n, string(line[:len(line)-trailingNewline(line)])); e != nil {
				entries = append(entries, e)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	slices.Sort(t.names)
	t.decoy = chooseDecoy(entries)
	return t, nil
}

func trailingNewline(b []byte) int {
	if len(b) > 0 && b[len(b)-1] == '\n' {
		return 1
	}
	return 0
}

// addLine adds the user of line n to t and returns it, or nil if the line
// defines no new user.
func (a *Authenticator) addLine(t *table, n int, line string) *entry {
	e, warnings, err := parseLine(line)
	if err != nil {
		a.log.Warn("passwd-file line skipped: malformed", "line", n, "err", err)
		return nil
	}
	if e == nil {
		return nil
	}
	for _, w := range warnings {
		a.log.Warn("passwd-file: "+w, "line", n, "user", e.user)
	}
	if prev, ok := t.byUser[e.user]; ok {
		a.log.Warn("passwd-file line skipped: user already defined", "line", n, "user", e.user, "first_line", prev.line)
		return nil
	}
	e.line = n
	t.byUser[e.user] = e
	t.names = append(t.names, e.user)
	return e
}

// Authenticate checks username's password. It returns
// auth.ErrInvalidCredentials for an unknown user or a wrong, empty or
// unverifiable password, and an error wrapping auth.ErrUnavailable when
// the file cannot be read.
func (a *Authenticator) Authenticate(ctx context.Context, username, password string) (*auth.Identity, error) {
	t, err := a.current()
	if err != nil {
		return nil, err
	}
	u := auth.Normalize(username)
	e, ok := t.byUser[u]
	if password == "" {
		return nil, auth.ErrInvalidCredentials
	}
	// Every refusal below checks one hash of the file's usual work class,
	// so a login takes as long whether or not the user exists.
	if !ok {
		a.checkDecoy(t, password)
		return nil, auth.ErrInvalidCredentials
	}
	if e.noLogin != "" || e.scheme == "" {
		a.checkDecoy(t, password)
		a.log.InfoContext(ctx, "login refused by passwd-file entry", "user", u, "line", e.line, "reason", cmp.Or(e.noLogin, "no password set"))
		return nil, auth.ErrInvalidCredentials
	}
	ok, err = a.verify(e.scheme, e.hash, password)
	if err != nil {
		// The verifier may have stopped before doing the work.
		a.checkDecoy(t, password)
		a.log.WarnContext(ctx, "cannot verify password: fix the user's passwd-file entry", "user", u, "line", e.line, "scheme", e.scheme, "err", err)
		return nil, auth.ErrInvalidCredentials
	}
	if !ok {
		return nil, auth.ErrInvalidCredentials
	}
	return e.identity(), nil
}

// checkDecoy checks password against t's decoy for the time it takes; the
// result is thrown away.
func (a *Authenticator) checkDecoy(t *table, password string) {
	if d := t.decoy; d != nil {
		a.verify(d.scheme, d.hash, password)
	}
}

// Lookup finds username without a password (delivery, admin commands).
func (a *Authenticator) Lookup(ctx context.Context, username string) (*auth.Identity, error) {
	t, err := a.current()
	if err != nil {
		return nil, err
	}
	e, ok := t.byUser[auth.Normalize(username)]
	if !ok {
		return nil, auth.ErrNoSuchUser
	}
	return e.identity(), nil
}

// ListUsers returns every user in the file, sorted.
func (a *Authenticator) ListUsers(ctx context.Context) ([]string, error) {
	t, err := a.current()
	if err != nil {
		return nil, err
	}
	return slices.Clone(t.names), nil
}

func (e *entry) identity() *auth.Identity {
	return &auth.Identity{
		User:          e.user,
		Home:          e.home,
		Maildir:       e.maildir,
		QuotaBytes:    e.quotaBytes,
		QuotaMessages: e.quotaMessages,
		UID:           e.uid,
		GID:           e.gid,
		Backend:       "file",
	}
}
