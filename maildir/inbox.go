package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/roost-mail/roost/backend"
)

// renameInbox implements RFC 3501 6.3.5: INBOX's messages move to a new
// mailbox newC, keeping their UIDs under a new UIDVALIDITY, and INBOX
// stays, empty. Children of INBOX are not moved.
func (u *user) renameInbox(ctx context.Context, newC string) error {
	if err := u.CreateMailbox(ctx, newC, ""); err != nil {
		return err
	}
	src := u.s.acquire(u.root, u.own)
	defer u.s.releaseState(src)
	dst := u.s.acquire(u.mailboxDir(newC), u.own)
	defer u.s.releaseState(dst)

	src.mu.Lock()
	defer src.mu.Unlock()
	lk, err := src.lockUidlist(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := lk.release(); err != nil {
			u.log.Error("release uidlist lock", "err", err)
		}
	}()
	if err := src.rescan(ctx, lk); err != nil {
		return err
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	dlk, err := dst.lockUidlist(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := dlk.release(); err != nil {
			u.log.Error("release uidlist lock", "err", err)
		}
	}()
	if err := dst.ensureLoaded(true); err != nil {
		return err
	}
	// The new mailbox's list first, so that a crash part-way leaves every
	// moved file with its UID.
	dst.nextUID = src.nextUID
	dst.kw, dst.kwCache = src.kw, map[uint32][]string{}
	all := append([]backend.Message(nil), src.msgs...)
	dst.msgs, dst.locs = all, append([]loc(nil), src.locs...)
	dst.byKey = make(map[string]backend.UID, len(all))
	for _, m := range all {
		dst.byKey[m.Key] = m.UID
	}
	dst.ext = src.ext
	if err := writeAtomic(filepath.Join(dst.dir, keywordsName), src.kw.marshal(), u.s.opts.Fsync, u.own, u.s.names); err != nil {
		return fmt.Errorf("maildir: rename INBOX: %w", err)
	}
	if err := dst.writeUidlist(all, -1); err != nil {
		return fmt.Errorf("maildir: rename INBOX: %w", err)
	}
	for i, m := range src.msgs {
		if !src.locs[i].known {
			continue
		}
		from := src.path(i)
		to := dst.filePath(m.Key, src.locs[i])
		if err := renameNoReplace(from, to); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("maildir: rename INBOX: move %s: %w", from, err)
		}
	}
	dst.snap = nil
	dst.notify()
	src.msgs, src.locs = nil, nil
	src.byKey = map[string]backend.UID{}
	src.snap = nil
	if err := src.writeUidlist(nil, -1); err != nil {
		return fmt.Errorf("maildir: rename INBOX: %w", err)
	}
	src.notify()
	return nil
}
