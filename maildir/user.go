package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/roost-mail/roost/backend"
)

// user is one account's Maildir++ tree.
type user struct {
	s    *Store
	acct backend.Account
	root string
	own  owner
	log  *slog.Logger
}

const specialUseFile = "roost-special-use"

func (u *user) Name() string { return u.acct.Name }
func (u *user) Close() error { return nil }

// mailboxDir returns the directory of a canonical name.
func (u *user) mailboxDir(canon string) string {
	if canon == "INBOX" {
		return u.root
	}
	return filepath.Join(u.root, dirName(canon))
}

// folders lists the Maildir++ folder directories: canonical name -> dir
// entry name. Entries that are not folders are skipped; symlinks are
// followed only if they stay inside the Maildir.
func (u *user) folders() (map[string]string, error) {
	names, err := readNames(u.root)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", u.root, err)
	}
	out := map[string]string{}
	for _, n := range names {
		if len(n) < 2 || n[0] != '.' || n[1] == '.' {
			continue
		}
		p := filepath.Join(u.root, n)
		st, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			if !u.insideRoot(p) {
				u.log.Warn("folder symlink points outside the Maildir; ignored", "path", p)
				continue
			}
			if st, err = os.Stat(p); err != nil {
				continue
			}
		}
		if !st.IsDir() {
			continue // e.g. .dovecot.sieve, .qmail
		}
		name, err := nameFromDir(n)
		if err != nil {
			u.log.Warn("folder directory ignored", "path", p, "err", err)
			continue
		}
		if prev, dup := out[name]; dup {
			u.log.Warn("two folder directories map to one name; using the first", "name", name, "dirs", []string{prev, n})
			continue
		}
		out[name] = n
	}
	return out, nil
}

func (u *user) ListMailboxes(ctx context.Context) ([]backend.MailboxInfo, error) {
	dirs, err := u.folders()
	if err != nil {
		return nil, err
	}
	subs, _, err := readSubscriptions(u.root)
	if err != nil {
		u.log.Warn("subscriptions damaged or unreadable; listing with what could be read", "err", err)
	}
	subSet := map[string]bool{}
	for _, n := range subs {
		subSet[n] = true
	}
	infos := map[string]*backend.MailboxInfo{"INBOX": {Name: "INBOX"}}
	for name, d := range dirs {
		mi := &backend.MailboxInfo{Name: name, SpecialUse: u.specialUse(name, d)}
		infos[name] = mi
	}
	for name := range dirs {
		parts := strings.Split(name, "/")
		for i := 1; i < len(parts); i++ {
			parent := strings.Join(parts[:i], "/")
			p := infos[parent]
			if p == nil {
				p = &backend.MailboxInfo{Name: parent, NoSelect: true}
				infos[parent] = p
			}
			p.HasChildren = true
		}
	}
	out := make([]backend.MailboxInfo, 0, len(infos))
	for _, mi := range infos {
		mi.Subscribed = subSet[mi.Name]
		out = append(out, *mi)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name == "INBOX" || out[j].Name == "INBOX" {
			return out[i].Name == "INBOX" && out[j].Name != "INBOX"
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func (u *user) specialUse(name, dir string) string {
	if b, err := os.ReadFile(filepath.Join(u.root, dir, specialUseFile)); err == nil {
		if v := strings.TrimSpace(string(b)); validSpecialUse(v) {
			return v
		}
	}
	return u.s.opts.SpecialUse[name]
}

func validSpecialUse(v string) bool {
	switch v {
	case backend.SpecialUseSent, backend.SpecialUseDrafts, backend.SpecialUseTrash,
		backend.SpecialUseJunk, backend.SpecialUseArchive:
		return true
	}
	return false
}

// isTrash reports whether a canonical name is the \Trash folder, which
// quota does not count unless Options.IncludeTrash.
func (u *user) isTrash(canon string) bool {
	if canon == "INBOX" {
		return false
	}
	return u.specialUse(canon, dirName(canon)) == backend.SpecialUseTrash
}

// insideRoot reports whether dir, after symlinks, stays inside the
// Maildir (or does not exist yet).
func (u *user) insideRoot(dir string) bool {
	if dir == u.root {
		return true
	}
	fi, err := os.Lstat(dir)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return true
	}
	target, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	root, err := filepath.EvalSymlinks(u.root)
	if err != nil {
		return false
	}
	return strings.HasPrefix(target, root+string(filepath.Separator))
}

func (u *user) exists(canon string) bool {
	st, err := os.Stat(u.mailboxDir(canon))
	return err == nil && st.IsDir()
}

func (u *user) CreateMailbox(ctx context.Context, name, specialUse string) error {
	canon, err := normalizeName(name)
	if err != nil {
		return err
	}
	if specialUse != "" && !validSpecialUse(specialUse) {
		return fmt.Errorf("maildir: special-use attribute %q is not one of RFC 6154's: %w", specialUse, backend.ErrPermissionDenied)
	}
	if canon == "INBOX" {
		return fmt.Errorf("maildir: %w: INBOX", backend.ErrMailboxExists)
	}
	parts := strings.Split(canon, "/")
	var parents []string
	for i := 1; i < len(parts); i++ {
		if parent := strings.Join(parts[:i], "/"); parent != "INBOX" {
			parents = append(parents, parent)
		}
	}
	if err := u.checkMailboxLimit("create "+canon, append(parents, canon), nil); err != nil {
		return err
	}
	for _, parent := range parents {
		if err := u.createFolder(parent, ""); err != nil && !errors.Is(err, backend.ErrMailboxExists) {
			return err
		}
	}
	return u.createFolder(canon, specialUse)
}

// checkMailboxLimit fails with backend.ErrLimit if creating the folders
// adding (those that do not exist yet) and removing the folders removing
// would leave the user with more counted folders than
// Options.MaxMailboxes allows and more than now. A user already over the
// limit (it was lowered) may still rename and delete.
func (u *user) checkMailboxLimit(what string, adding, removing []string) error {
	limit := u.s.opts.MaxMailboxes
	if limit <= 0 {
		return nil
	}
	dirs, err := u.folders()
	if err != nil {
		return err
	}
	have := 0
	for name := range dirs {
		if !u.s.auto[name] {
			have++
		}
	}
	delta := 0
	for _, name := range adding {
		if _, ok := dirs[name]; !ok && !u.s.auto[name] {
			delta++
		}
	}
	for _, name := range removing {
		if _, ok := dirs[name]; ok && !u.s.auto[name] {
			delta--
		}
	}
	if delta > 0 && have+delta > limit {
		return fmt.Errorf("maildir: cannot %s: %s has %d folders besides INBOX and the standard ones, and the limit is %d; delete folders first or ask the administrator to raise it: %w",
			what, u.acct.Name, have, limit, backend.ErrLimit)
	}
	return nil
}

// createFolder makes a complete folder in a hidden directory, then renames
// it into place, so no one ever sees a half-made folder.
func (u *user) createFolder(canon, specialUse string) error {
	final := u.mailboxDir(canon)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("maildir: %w: %s", backend.ErrMailboxExists, canon)
	}
	tmp := filepath.Join(u.root, "..roost-new."+u.s.names.next())
	if err := mkdirOwned(tmp, u.own); err != nil {
		return fmt.Errorf("maildir: create folder %s: %w", canon, err)
	}
	cleanup := func(err error) error {
		os.RemoveAll(tmp)
		return fmt.Errorf("maildir: create folder %s: %w", canon, err)
	}
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := mkdirOwned(filepath.Join(tmp, sub), u.own); err != nil {
			return cleanup(err)
		}
	}
	files := map[string]string{"maildirfolder": ""}
	if specialUse != "" {
		files[specialUseFile] = specialUse + "\n"
	}
	for f, content := range files {
		p := filepath.Join(tmp, f)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return cleanup(err)
		}
		if err := u.own.chown(p); err != nil {
			return cleanup(err)
		}
	}
	if err := renameNoReplace(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			os.RemoveAll(tmp)
			return fmt.Errorf("maildir: %w: %s", backend.ErrMailboxExists, canon)
		}
		return cleanup(err)
	}
	if u.s.opts.Fsync {
		if err := syncDir(u.root); err != nil {
			return fmt.Errorf("maildir: create folder %s: %w", canon, err)
		}
	}
	return nil
}

// children returns the canonical names of the folders below canon.
func (u *user) children(canon string, dirs map[string]string) []string {
	var out []string
	for name := range dirs {
		if strings.HasPrefix(name, canon+"/") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (u *user) DeleteMailbox(ctx context.Context, name string) error {
	canon, err := normalizeName(name)
	if err != nil {
		return err
	}
	if canon == "INBOX" {
		return fmt.Errorf("maildir: INBOX cannot be deleted: %w", backend.ErrPermissionDenied)
	}
	dirs, err := u.folders()
	if err != nil {
		return err
	}
	kids := u.children(canon, dirs)
	if _, ok := dirs[canon]; !ok {
		if len(kids) > 0 {
			return fmt.Errorf("maildir: %s: %w", canon, backend.ErrHasChildren)
		}
		return fmt.Errorf("maildir: %w: %s", backend.ErrNoSuchMailbox, canon)
	}
	if len(kids) > 0 {
		return fmt.Errorf("maildir: %s: %w", canon, backend.ErrHasChildren)
	}
	dir := filepath.Join(u.root, dirs[canon])
	counted := u.s.opts.IncludeTrash || !u.isTrash(canon)
	// Hide it first (Maildir++ ignores "..*"), then remove at leisure.
	gone := filepath.Join(u.root, "..roost-deleted."+u.s.names.next())
	if err := os.Rename(dir, gone); err != nil {
		return fmt.Errorf("maildir: delete %s: %w", canon, err)
	}
	u.s.notifyDir(dir, false)
	if counted {
		if usage, err := folderUsage(gone); err == nil && usage.Messages > 0 {
			u.quotaDelta(-usage.Bytes, -usage.Messages)
		}
	}
	if err := os.RemoveAll(gone); err != nil {
		u.log.Error("deleted folder could not be removed completely", "path", gone, "err", err)
	}
	return nil
}

func (u *user) RenameMailbox(ctx context.Context, name, newName string) error {
	oldC, err := normalizeName(name)
	if err != nil {
		return err
	}
	newC, err := normalizeName(newName)
	if err != nil {
		return err
	}
	if newC == "INBOX" || u.exists(newC) {
		return fmt.Errorf("maildir: %w: %s", backend.ErrMailboxExists, newC)
	}
	if strings.HasPrefix(newC, oldC+"/") {
		return fmt.Errorf("maildir: %w: cannot move %s below itself", backend.ErrInvalidName, oldC)
	}
	if oldC == "INBOX" {
		return u.renameInbox(ctx, newC)
	}
	dirs, err := u.folders()
	if err != nil {
		return err
	}
	kids := u.children(oldC, dirs)
	if _, ok := dirs[oldC]; !ok && len(kids) == 0 {
		return fmt.Errorf("maildir: %w: %s", backend.ErrNoSuchMailbox, oldC)
	}
	for _, k := range kids {
		if u.exists(newC + strings.TrimPrefix(k, oldC)) {
			return fmt.Errorf("maildir: %w: %s", backend.ErrMailboxExists, newC+strings.TrimPrefix(k, oldC))
		}
	}
	moves := kids
	if _, ok := dirs[oldC]; ok {
		moves = append([]string{oldC}, kids...)
	}
	// Renaming a special-use folder (Sent -> "Sent 2025") makes it count;
	// Open then creates a new Sent, so the rename adds a folder.
	targets := make([]string, len(moves))
	for i, from := range moves {
		targets[i] = newC + strings.TrimPrefix(from, oldC)
	}
	if err := u.checkMailboxLimit("rename "+oldC+" to "+newC, targets, moves); err != nil {
		return err
	}
	for _, from := range moves {
		to := newC + strings.TrimPrefix(from, oldC)
		src := filepath.Join(u.root, dirs[from])
		if err := renameNoReplace(src, u.mailboxDir(to)); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("maildir: %w: %s", backend.ErrMailboxExists, to)
			}
			return fmt.Errorf("maildir: rename %s to %s: %w", from, to, err)
		}
		u.s.notifyDir(src, false)
	}
	if u.s.opts.Fsync {
		_ = syncDir(u.root)
	}
	if err := u.renameSubscriptions(oldC, newC); err != nil {
		u.log.Warn("subscriptions not updated after rename", "from", oldC, "to", newC, "err", err)
	}
	return nil
}

// Subscriptions returns every subscribed name, also those of mailboxes
// that no longer exist: a subscription outlives its mailbox (RFC 3501
// 6.3.6), and LSUB and LIST (SUBSCRIBED) show it as \NonExistent.
func (u *user) Subscriptions(ctx context.Context) ([]string, error) {
	subs, _, err := readSubscriptions(u.root)
	if err != nil && !errors.Is(err, errBadSubscriptions) {
		return nil, fmt.Errorf("maildir: read subscriptions of %s: %w", u.acct.Name, err)
	}
	return subs, nil
}

func (u *user) SetSubscribed(ctx context.Context, name string, subscribed bool) error {
	canon, err := normalizeName(name)
	if err != nil {
		return err
	}
	return u.updateSubscriptions(ctx, func(set []string) []string {
		out := set[:0:0]
		for _, n := range set {
			if n != canon {
				out = append(out, n)
			}
		}
		if subscribed {
			out = append(out, canon)
		}
		return out
	})
}

func (u *user) renameSubscriptions(oldC, newC string) error {
	return u.updateSubscriptions(context.Background(), func(set []string) []string {
		out := make([]string, 0, len(set))
		for _, n := range set {
			switch {
			case n == oldC:
				n = newC
			case strings.HasPrefix(n, oldC+"/"):
				n = newC + strings.TrimPrefix(n, oldC)
			}
			out = append(out, n)
		}
		return out
	})
}

func (u *user) OpenMailbox(ctx context.Context, name string) (backend.Mailbox, error) {
	canon, err := normalizeName(name)
	if err != nil {
		return nil, err
	}
	dir := u.mailboxDir(canon)
	for _, p := range []string{dir, filepath.Join(dir, "cur"), filepath.Join(dir, "new"), filepath.Join(dir, "tmp")} {
		if !u.insideRoot(p) {
			u.log.Warn("folder is a symlink out of the Maildir; refused", "path", p)
			return nil, fmt.Errorf("maildir: %w: %s", backend.ErrNoSuchMailbox, canon)
		}
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, fmt.Errorf("maildir: %w: %s", backend.ErrNoSuchMailbox, canon)
	}
	if canon != "INBOX" {
		// A folder missing its subdirectories (made by hand) is repaired.
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := mkdirOwned(filepath.Join(dir, sub), u.own); err != nil {
				return nil, fmt.Errorf("maildir: open %s: %w", canon, err)
			}
		}
	}
	u.s.cleanTmp(dir)
	mb := &mailbox{u: u, name: canon, st: u.s.acquire(dir, u.own)}
	mb.counted = u.s.opts.IncludeTrash || !u.isTrash(canon)
	if _, err := mb.st.sync(ctx, false); err != nil {
		u.s.releaseState(mb.st)
		return nil, fmt.Errorf("maildir: open %s for %s: %w", canon, u.acct.Name, err)
	}
	return mb, nil
}

// Lock takes the named cross-process lock "roost-<name>.lock" in the
// Maildir root. It is refreshed while held and broken when its holder died.
func (u *user) Lock(ctx context.Context, name string) (func() error, error) {
	if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return nil, fmt.Errorf("maildir: lock name %q: use letters, digits, - and _", name)
	}
	p := filepath.Join(u.root, "roost-"+name+".lock")
	lk, err := tryDotlock(p, namedLockStale, u.s.names)
	if err != nil {
		return nil, fmt.Errorf("maildir: lock %s: %w", name, err)
	}
	if lk == nil {
		return nil, fmt.Errorf("maildir: %s of %s: %w", name, u.acct.Name, backend.ErrLocked)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(namedLockStale / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := lk.touch(); err != nil {
					u.log.Warn("cannot refresh lock", "lock", p, "err", err)
				}
			}
		}
	}()
	var once sync.Once
	var err2 error
	return func() error {
		once.Do(func() {
			close(stop)
			<-done
			err2 = lk.release()
		})
		return err2
	}, nil
}

const namedLockStale = 2 * time.Minute
