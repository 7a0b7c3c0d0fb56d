package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/roost-mail/roost/backend"
)

// Options configure a Store. The zero value is useful: the five standard
// special-use folders, no fsync, Trash not counted in quota, no grace.
type Options struct {
	// SpecialUse maps folder names to RFC 6154 attributes (`\Sent`, ...).
	// Listed folders are created at Open. nil means DefaultSpecialUse; an
	// empty map means none.
	SpecialUse map[string]string
	// Fsync makes every acknowledged write durable (fsync of the file and
	// its directory) before it returns. Production sets it; tests may not.
	Fsync bool
	// IncludeTrash counts the \Trash folder in quota usage (Courier's
	// --with-trashquota). By default Trash is not counted.
	IncludeTrash bool
	// GracePercent lets the message that crosses the limit through if the
	// result stays within limit + GracePercent% (Dovecot's quota_grace).
	GracePercent int
	// Logger receives warnings about damaged files and recoveries. nil
	// discards them.
	Logger *slog.Logger
	// PollInterval is how often a mailbox with open snapshots checks its
	// directories when inotify is unavailable (NFS). Default 5s.
	PollInterval time.Duration
	// Poll also checks open mailboxes every PollInterval, besides inotify.
	// Set it when Maildirs are on NFS shared by several hosts: inotify sees
	// only this host's changes.
	Poll bool
	// LockTimeout bounds the wait for a dovecot-uidlist lock. Default 30s.
	LockTimeout time.Duration
	// MaxMailboxes limits how many folders a user may have, not counting
	// INBOX and the SpecialUse folders (those are created anyway). CREATE
	// (with the parents it makes) and RENAME beyond it fail with
	// backend.ErrLimit. It is checked before creating, so concurrent
	// creations may pass it by a few. 0 means no limit.
	MaxMailboxes int
	// NoSizeMeasurer keeps this Store from measuring unknown message sizes
	// in the background (Message.Size -1 then stays until someone asks
	// MessageSize). A delivery agent sets it: it opens many users'
	// mailboxes for a moment and would otherwise read every unmeasured
	// file of each, and keep their message lists in memory while queued.
	NoSizeMeasurer bool
}

// DefaultSpecialUse is the set of folders created for every user when
// Options.SpecialUse is nil.
func DefaultSpecialUse() map[string]string {
	return map[string]string{
		"Sent":    backend.SpecialUseSent,
		"Drafts":  backend.SpecialUseDrafts,
		"Trash":   backend.SpecialUseTrash,
		"Junk":    backend.SpecialUseJunk,
		"Archive": backend.SpecialUseArchive,
	}
}

// Store implements backend.Store over Maildir++ directories.
type Store struct {
	opts  Options
	log   *slog.Logger
	names *nameGen
	// auto holds the canonical names of the SpecialUse folders, which do
	// not count against MaxMailboxes.
	auto map[string]bool

	mu      sync.Mutex
	boxes   map[string]*mboxState
	interns map[string]string
	hub     *watchHub
	// bg runs the background size measurers (measure.go) and cache
	// settling (cache.go).
	bg background
	// noInotify makes the Store behave as on a file system without
	// inotify (tests of the polling fallback).
	noInotify bool
}

var _ backend.Store = (*Store)(nil)

// New returns a Store. Options are copied.
func New(opts Options) *Store {
	if opts.SpecialUse == nil {
		opts.SpecialUse = DefaultSpecialUse()
	} else {
		m := make(map[string]string, len(opts.SpecialUse))
		for k, v := range opts.SpecialUse {
			m[k] = v
		}
		opts.SpecialUse = m
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	auto := map[string]bool{}
	for name := range opts.SpecialUse {
		if canon, err := normalizeName(name); err == nil {
			auto[canon] = true
		}
	}
	return &Store{opts: opts, log: log, names: newNameGen(), auto: auto, boxes: map[string]*mboxState{}, interns: map[string]string{}}
}

func (s *Store) lockWait() time.Duration { return s.opts.LockTimeout }

// intern shares the few distinct info strings (":2,S", ":2,RS", ...)
// among all messages, which keeps a 100k snapshot small.
func (s *Store) intern(info string) string {
	if info == "" {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.interns[info]; ok {
		return v
	}
	if len(s.interns) > 4096 {
		return info
	}
	s.interns[info] = info
	return info
}

// nextUIDValidity returns a fresh UIDVALIDITY: the current time, but
// never the same value twice in this process.
func (s *Store) nextUIDValidity() uint32 {
	return uint32(s.names.nextSecond())
}

// Open opens (creating if needed) the Maildir of acct.
func (s *Store) Open(ctx context.Context, acct backend.Account) (backend.User, error) {
	if acct.Maildir == "" || !filepath.IsAbs(acct.Maildir) {
		return nil, fmt.Errorf("maildir: account %q has Maildir %q; it must be an absolute path", acct.Name, acct.Maildir)
	}
	root := filepath.Clean(acct.Maildir)
	own := owner{uid: acct.UID, gid: acct.GID}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return nil, fmt.Errorf("maildir: create parent of %s: %w", root, err)
	}
	if err := mkdirOwned(root, own); err != nil {
		return nil, fmt.Errorf("maildir: create %s: %w", root, err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := mkdirOwned(filepath.Join(root, sub), own); err != nil {
			return nil, fmt.Errorf("maildir: create %s/%s: %w", root, sub, err)
		}
	}
	if err := checkOwner(root, own); err != nil {
		return nil, fmt.Errorf("maildir: account %q: %w", acct.Name, err)
	}
	u := &user{s: s, acct: acct, root: root, own: own,
		log: s.log.With("user", acct.Name)}
	var created []string
	for name := range s.opts.SpecialUse {
		canon, err := normalizeName(name)
		if err != nil || canon == "INBOX" {
			u.log.Error("special-use folder name is not usable; skipped", "folder", name, "err", err)
			continue
		}
		err = u.createFolder(canon, "")
		switch {
		case err == nil:
			created = append(created, canon)
		case !errors.Is(err, backend.ErrMailboxExists):
			return nil, fmt.Errorf("maildir: create special-use folder %q for %s: %w", name, acct.Name, err)
		}
	}
	// Subscribed when created, as Dovecot's auto=subscribe: clients that
	// show only subscribed folders (Thunderbird) then show them. One the
	// user unsubscribed later stays unsubscribed.
	if len(created) > 0 {
		err := u.updateSubscriptions(ctx, func(set []string) []string {
			for _, c := range created {
				if !slices.Contains(set, c) {
					set = append(set, c)
				}
			}
			return set
		})
		if err != nil {
			u.log.Warn("special-use folders created but not subscribed", "folders", created, "err", err)
		}
	}
	if err := u.syncQuotaLimit(); err != nil {
		u.log.Warn("cannot update maildirsize header", "err", err)
	}
	return u, nil
}

// acquire returns the shared state of the mailbox directory dir.
func (s *Store) acquire(dir string, own owner) *mboxState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.boxes[dir]
	if st == nil {
		st = &mboxState{s: s, dir: dir, own: own, changed: make(chan struct{}), kwCache: map[uint32][]string{}}
		s.boxes[dir] = st
	}
	st.refs++
	if st.refs == 1 {
		st.stopWatch = s.watch(st)
	}
	return st
}

func (s *Store) releaseState(st *mboxState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.refs--
	if st.refs == 0 {
		if st.stopWatch != nil {
			st.stopWatch()
		}
		delete(s.boxes, st.dir)
	}
}

// notifyDir tells open handles of dir (and of folders below it when
// prefix) that their mailbox changed, e.g. was deleted or renamed.
func (s *Store) notifyDir(dir string, prefix bool) {
	s.mu.Lock()
	var sts []*mboxState
	for d, st := range s.boxes {
		if d == dir || (prefix && strings.HasPrefix(d, dir+".")) {
			sts = append(sts, st)
		}
	}
	s.mu.Unlock()
	for _, st := range sts {
		st.notify()
	}
}

// cleanTmp removes files in tmp/ older than 36 hours: deliveries that
// crashed before their rename (Maildir spec, Dovecot).
func (s *Store) cleanTmp(dir string) {
	tmp := filepath.Join(dir, "tmp")
	names, err := readNames(tmp)
	if err != nil {
		return
	}
	cutoff := time.Now().Add(-tmpMaxAge)
	for _, n := range names {
		p := filepath.Join(tmp, n)
		st, err := os.Lstat(p)
		if err != nil || st.IsDir() || st.ModTime().After(cutoff) {
			continue
		}
		if err := os.Remove(p); err == nil {
			s.log.Info("removed stale tmp file", "file", p, "mtime", st.ModTime())
		}
	}
}

// Close stops change detection and background size measurement (sizes
// not yet recorded are measured again later) and waits for the background goroutines.
// Open users and mailboxes must be closed first; the Store must not be
// used afterwards.
func (s *Store) Close() error {
	s.bg.stop()
	s.mu.Lock()
	h := s.hub
	s.hub = nil
	s.mu.Unlock()
	if h != nil {
		return h.w.Close()
	}
	return nil
}

// checkOwner refuses a Maildir, or a cur/new/tmp inside it, that belongs to
// someone other than the account's uid when one is set (system-users
// layout, where the daemons run as root): otherwise a user could point
// ~/Maildir or ~/Maildir/cur at another user's mail and read it through a
// root daemon. Symlinks are followed, as the daemons would follow them.
func checkOwner(root string, own owner) error {
	if own.uid < 0 {
		return nil
	}
	for _, p := range []string{root, filepath.Join(root, "cur"), filepath.Join(root, "new"), filepath.Join(root, "tmp")} {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != own.uid {
			return fmt.Errorf("%w: %s belongs to uid %d, not the user's uid %d; fix its owner (chown) if it really is this user's", backend.ErrPermissionDenied, p, sys.Uid, own.uid)
		}
	}
	return nil
}
