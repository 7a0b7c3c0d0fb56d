package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/roost-mail/roost/backend"
	"golang.org/x/sys/unix"
)

func (mb *mailbox) Expunge(ctx context.Context, uids []backend.UID) ([]backend.UID, error) {
	st := mb.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var removed []backend.UID
	var bytes int64
	rescanned := false
	trusted := st.inSync()
	for _, uid := range uids {
		for {
			i := st.find(uid)
			if i < 0 || !st.locs[i].known {
				break
			}
			p := st.path(i)
			phys, ok := sizeField(st.msgs[i].Key, 'S')
			if !ok {
				if fi, err := os.Lstat(p); err == nil {
					phys = fi.Size()
				}
			}
			st.s.expect(st, p)
			err := os.Remove(p)
			if err == nil {
				removed = append(removed, uid)
				bytes += phys
				break
			}
			if !errors.Is(err, fs.ErrNotExist) || rescanned {
				if errors.Is(err, fs.ErrNotExist) {
					break // expunged by someone else
				}
				return removed, fmt.Errorf("maildir: expunge UID %d from %s: %w", uid, mb.name, err)
			}
			rescanned = true
			trusted = false
			if err := st.rescan(ctx, nil); err != nil {
				return removed, err
			}
		}
	}
	if len(removed) == 0 {
		return nil, nil
	}
	if mb.counted {
		mb.u.quotaDelta(-bytes, -int64(len(removed)))
	}
	if st.s.opts.Fsync {
		_ = syncDir(filepath.Join(st.dir, "cur"))
		_ = syncDir(filepath.Join(st.dir, "new"))
	}
	// Drop the records now, so that a file restored under the same name
	// later gets a new UID instead of a reused one.
	if err := st.dropRecords(ctx, removed, trusted); err != nil {
		mb.u.log.Warn("expunged messages stay in dovecot-uidlist until the next rewrite", "mailbox", mb.name, "err", err)
	}
	return removed, nil
}

// dropRecords removes UIDs from memory and the uidlist. Caller holds st.mu.
func (st *mboxState) dropRecords(ctx context.Context, uids []backend.UID, trusted bool) error {
	gone := make(map[backend.UID]bool, len(uids))
	for _, u := range uids {
		gone[u] = true
	}
	filter := func() ([]backend.Message, []loc) {
		msgs := make([]backend.Message, 0, len(st.msgs))
		locs := make([]loc, 0, len(st.msgs))
		for i, m := range st.msgs {
			if gone[m.UID] {
				if st.byKey[m.Key] == m.UID {
					delete(st.byKey, m.Key)
				}
				delete(st.ext, m.UID)
				continue
			}
			msgs = append(msgs, m)
			locs = append(locs, st.locs[i])
		}
		return msgs, locs
	}
	defer func() { st.ownChange(trusted) }()
	lk, err := st.lockUidlist(ctx)
	if err != nil {
		st.msgs, st.locs = filter()
		return err
	}
	defer func() {
		if err := lk.release(); err != nil {
			st.s.log.Error("release uidlist lock", "dir", st.dir, "err", err)
		}
	}()
	if err := st.ensureLoaded(true); err != nil {
		st.msgs, st.locs = filter()
		return err
	}
	st.msgs, st.locs = filter()
	return st.writeUidlist(st.msgs, -1)
}

func (mb *mailbox) Copy(ctx context.Context, uids []backend.UID, dest string) (backend.CopyResult, error) {
	return mb.copy(ctx, uids, dest, false)
}

// Move moves messages by renaming each file from this mailbox straight
// into dest's new/ or cur/ under dest's uidlist lock: the rename claims the
// message, so two sessions moving it at once cannot both deliver it. A
// crash after the rename leaves the file in dest without a UID (its next
// sync gives one) and a stale record here (the next sync drops it):
// nothing lost, nothing twice. Across file systems it copies, then
// expunges the originals (RFC 6851 order).
func (mb *mailbox) Move(ctx context.Context, uids []backend.UID, dest string) (backend.CopyResult, error) {
	res, err := mb.move(ctx, uids, dest)
	if !errors.Is(err, unix.EXDEV) {
		return res, err
	}
	mb.u.log.Info("move crosses file systems; copying instead", "mailbox", mb.name, "dest", dest)
	res, err = mb.copy(ctx, uids, dest, true)
	if err != nil {
		return res, err
	}
	if _, err := mb.Expunge(ctx, res.Source); err != nil {
		return res, fmt.Errorf("maildir: move: copied to %s but could not remove the originals: %w", dest, err)
	}
	return res, nil
}

// errGone: a moved message's file was not found any more; another session
// moved or expunged it first.
var errGone = errors.New("message file gone")

// moveSrc is the file of a message being moved, in its mailbox.
type moveSrc struct {
	box   *mboxState
	path  string // where the file is now
	key   string // its base name
	other bool   // another session renamed or took the file
}

// relocate finds a moved message's file again after its rename failed with
// ENOENT: another session may have renamed it for a flag change (the
// pending then takes the flags of the name found, which may be the old
// one again). gone reports that no file has its base name any more: the
// listing is repeated while the directories change under it, and if it
// never holds still, the message counts as gone and stays where it is.
func (src *moveSrc) relocate(p *pending) (gone bool, err error) {
	src.other = true
	newDir, curDir := filepath.Join(src.box.dir, "new"), filepath.Join(src.box.dir, "cur")
	for attempt := 0; attempt < 4; attempt++ {
		nb, cb := statID(newDir), statID(curDir)
		// new/ first: a file moving new -> cur meanwhile is then seen in cur/.
		for _, dir := range []string{newDir, curDir} {
			names, err := readNames(dir)
			if err != nil {
				return false, err
			}
			for _, n := range names {
				key, info := splitName(n)
				if key != src.key || !validFileName(n) {
					continue
				}
				src.path = filepath.Join(dir, n)
				p.flags, p.keywords, p.info = 0, nil, ""
				if info != "" {
					fl, bits := parseInfo(info)
					kt, _ := parseKeywords(readOrEmpty(filepath.Join(src.box.dir, keywordsName)))
					p.flags, p.keywords, p.info = fl, kt.names(bits), makeInfo(info, fl, 0)
				}
				return false, nil
			}
		}
		if statID(newDir) == nb && statID(curDir) == cb {
			break
		}
	}
	return true, nil
}

func readOrEmpty(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// moveNoReplace renames a message file to a fresh name. Without
// RENAME_NOREPLACE (NFS) it checks, then renames: the name is unique, and
// rename, unlike link + unlink, lets only one of two movers take the file.
func moveNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: fs.ErrExist}
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTSUP):
		if _, serr := os.Lstat(newPath); serr == nil {
			return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: fs.ErrExist}
		}
		return os.Rename(oldPath, newPath)
	}
	return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: err}
}

// move does Move's work on one file system; it fails with EXDEV, having
// moved nothing, when dest is on another.
func (mb *mailbox) move(ctx context.Context, uids []backend.UID, dest string) (backend.CopyResult, error) {
	canon, dir, err := mb.u.destination(dest)
	if err != nil {
		return backend.CopyResult{}, err
	}
	u := mb.u
	srcs := mb.sources(uids)
	if len(srcs) == 0 {
		return backend.CopyResult{}, nil
	}
	mb.st.mu.Lock()
	srcTrusted := mb.st.inSync()
	mb.st.mu.Unlock()
	dst := u.s.acquire(dir, u.own)
	defer u.s.releaseState(dst)
	destCounted := u.s.opts.IncludeTrash || !u.isTrash(canon)
	ps := make([]pending, 0, len(srcs))
	ms := make([]*moveSrc, 0, len(srcs))
	var phys int64
	// Another session's change to the source (a file it took or renamed)
	// may have been taken for ours by inotify: then the source must be
	// listed again, whatever its directories' mtimes say.
	othersChanged := false
	for _, s := range srcs {
		p, m, err := mb.prepareMove(s)
		if errors.Is(err, errGone) {
			othersChanged = true
			continue
		}
		if err != nil {
			return backend.CopyResult{}, err
		}
		ps, ms = append(ps, p), append(ms, m)
		phys += p.phys
	}
	// Out of an uncounted Trash into a counted folder adds usage.
	if destCounted && !mb.counted && len(ps) > 0 {
		if err := u.checkQuota(phys, int64(len(ps))); err != nil {
			return backend.CopyResult{}, err
		}
	}
	msgs, err := dst.place(ctx, ps, ms)
	if err != nil {
		return backend.CopyResult{}, fmt.Errorf("maildir: move to %s: %w", canon, err)
	}
	res := backend.CopyResult{UIDValidity: dst.uidValidityNow()}
	var moved int64
	phys = 0
	for i, p := range ps {
		othersChanged = othersChanged || ms[i].other
		if msgs[i].UID == 0 {
			continue
		}
		res.Source = append(res.Source, p.srcUID)
		res.Dest = append(res.Dest, msgs[i].UID)
		moved++
		phys += p.phys
	}
	if moved == 0 {
		if othersChanged {
			mb.st.notify()
		}
		return res, nil
	}
	switch {
	case destCounted && !mb.counted:
		u.quotaDelta(phys, moved)
	case !destCounted && mb.counted:
		u.quotaDelta(-phys, -moved)
	}
	st := mb.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := st.dropRecords(ctx, res.Source, srcTrusted && !othersChanged); err != nil {
		u.log.Warn("moved messages stay in dovecot-uidlist until the next rewrite", "mailbox", mb.name, "err", err)
	}
	return res, nil
}

// prepareMove describes a message about to be moved: its new name in the
// destination (a fresh base name with the size fields), flags and the
// letters Roost does not manage.
func (mb *mailbox) prepareMove(s source) (pending, *moveSrc, error) {
	m := &moveSrc{box: mb.st, path: s.path, key: s.msg.Key}
	fl, _ := parseInfo(s.info)
	p := pending{flags: fl, keywords: s.msg.Keywords, date: s.msg.InternalDate, srcUID: s.uid}
	if s.info != "" {
		p.info = makeInfo(s.info, fl, 0)
	}
	phys, ok := sizeField(s.msg.Key, 'S')
	if !ok {
		fi, err := os.Stat(m.path)
		if errors.Is(err, fs.ErrNotExist) {
			gone, rerr := m.relocate(&p)
			if gone {
				return p, m, errGone
			}
			if rerr == nil {
				fi, err = os.Stat(m.path)
			}
		}
		if err != nil {
			return p, m, fmt.Errorf("maildir: move UID %d from %s: %w", s.uid, mb.name, err)
		}
		phys = fi.Size()
	}
	p.phys = phys
	size, err := mb.st.messageSize(m.path, s.msg)
	if errors.Is(err, fs.ErrNotExist) {
		gone, rerr := m.relocate(&p)
		if gone {
			return p, m, errGone
		}
		if rerr == nil {
			size, err = mb.st.messageSize(m.path, s.msg)
		}
	}
	if err != nil {
		return p, m, fmt.Errorf("maildir: move UID %d from %s: %w", s.uid, mb.name, err)
	}
	p.size = size
	p.key = fmt.Sprintf("%s,S=%d,W=%d", mb.u.s.names.next(), phys, size)
	return p, m, nil
}

type source struct {
	uid  backend.UID
	path string
	msg  backend.Message
	info string
}

func (mb *mailbox) copy(ctx context.Context, uids []backend.UID, dest string, move bool) (backend.CopyResult, error) {
	canon, dir, err := mb.u.destination(dest)
	if err != nil {
		return backend.CopyResult{}, err
	}
	u := mb.u
	srcs := mb.sources(uids)
	if len(srcs) == 0 {
		return backend.CopyResult{UIDValidity: 0}, nil
	}
	dst := u.s.acquire(dir, u.own)
	defer u.s.releaseState(dst)
	destCounted := u.s.opts.IncludeTrash || !u.isTrash(canon)
	var phys int64
	ps := make([]pending, 0, len(srcs))
	cleanup := func() {
		for _, p := range ps {
			os.Remove(p.tmp)
		}
	}
	for _, s := range srcs {
		p, err := mb.prepareCopy(ctx, s, dst)
		if errors.Is(err, fs.ErrNotExist) {
			// The file moved (flags changed elsewhere): look it up again.
			if _, serr := mb.st.sync(ctx, true); serr == nil {
				if again := mb.sources([]backend.UID{s.uid}); len(again) == 1 {
					p, err = mb.prepareCopy(ctx, again[0], dst)
				}
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue // expunged meanwhile: skipped, as for a vanished UID
		}
		if err != nil {
			cleanup()
			return backend.CopyResult{}, err
		}
		ps = append(ps, p)
		phys += p.phys
	}
	// A move between two counted folders does not change usage.
	if destCounted && !(move && mb.counted) && len(ps) > 0 {
		if err := u.checkQuota(phys, int64(len(ps))); err != nil {
			cleanup()
			return backend.CopyResult{}, err
		}
	}
	msgs, err := dst.deliver(ctx, ps)
	if err != nil {
		return backend.CopyResult{}, fmt.Errorf("maildir: copy to %s: %w", canon, err)
	}
	if destCounted {
		u.quotaDelta(phys, int64(len(ps)))
	}
	res := backend.CopyResult{UIDValidity: dst.uidValidityNow()}
	for i, p := range ps {
		res.Source = append(res.Source, p.srcUID)
		res.Dest = append(res.Dest, msgs[i].UID)
	}
	return res, nil
}

// destination returns the canonical name and directory of an existing
// mailbox to copy or move into.
func (u *user) destination(name string) (string, string, error) {
	canon, err := normalizeName(name)
	if err != nil {
		return "", "", err
	}
	dir := u.mailboxDir(canon)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || !u.insideRoot(dir) {
		return "", "", fmt.Errorf("maildir: %w: %s", backend.ErrNoSuchMailbox, canon)
	}
	return canon, dir, nil
}

func (mb *mailbox) sources(uids []backend.UID) []source {
	st := mb.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []source
	for _, uid := range uids {
		if i := st.find(uid); i >= 0 && st.locs[i].known {
			out = append(out, source{uid: uid, path: st.path(i), msg: st.msgs[i], info: st.locs[i].info})
		}
	}
	return out
}

// prepareCopy hard-links (or, across file systems, copies) a source file
// into dst's tmp/ under a new unique name with the same size fields.
func (mb *mailbox) prepareCopy(ctx context.Context, s source, dst *mboxState) (pending, error) {
	base := mb.u.s.names.next()
	phys, ok := sizeField(s.msg.Key, 'S')
	if !ok {
		fi, err := os.Stat(s.path)
		if err != nil {
			return pending{}, err
		}
		phys = fi.Size()
	}
	// The copy's name carries its size: measure one not measured yet.
	size, err := mb.st.messageSize(s.path, s.msg)
	if err != nil {
		return pending{}, err
	}
	fl, _ := parseInfo(s.info)
	p := pending{
		tmp: filepath.Join(dst.dir, "tmp", base), key: fmt.Sprintf("%s,S=%d,W=%d", base, phys, size),
		flags: fl, keywords: s.msg.Keywords, size: size, phys: phys, date: s.msg.InternalDate,
		srcUID: s.uid,
	}
	if s.info != "" {
		// Keep letters Roost does not manage (P) and ",extra", drop keyword
		// letters: the destination has its own dovecot-keywords.
		p.info = makeInfo(s.info, fl, 0)
	}
	err = os.Link(s.path, p.tmp)
	if err == nil {
		return p, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return p, err
	}
	if err := copyFile(ctx, s.path, p.tmp, mb.u.s.opts.Fsync); err != nil {
		return p, err
	}
	if err := mb.u.own.chown(p.tmp); err != nil {
		os.Remove(p.tmp)
		return p, err
	}
	return p, os.Chtimes(p.tmp, s.msg.InternalDate, s.msg.InternalDate)
}

func copyFile(ctx context.Context, from, to string, doSync bool) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil && doSync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		os.Remove(to)
		return fmt.Errorf("copy message file: %w", err)
	}
	return nil
}
