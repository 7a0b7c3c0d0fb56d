package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/roost-mail/roost/backend"
)

// mailbox is one open handle on a mailbox.
type mailbox struct {
	u       *user
	name    string
	st      *mboxState
	counted bool // messages here count towards quota
	once    sync.Once
}

func (mb *mailbox) Name() string { return mb.name }

func (mb *mailbox) Close() error {
	mb.once.Do(func() { mb.u.s.releaseState(mb.st) })
	return nil
}

func (mb *mailbox) Sync(ctx context.Context) (*backend.Snapshot, error) {
	snap, err := mb.st.sync(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("maildir: sync %s of %s: %w", mb.name, mb.u.acct.Name, err)
	}
	return snap, nil
}

func (mb *mailbox) Status(ctx context.Context) (backend.Status, error) {
	snap, err := mb.Sync(ctx)
	if err != nil {
		return backend.Status{}, err
	}
	s := snap.Counts()
	size, err := mb.st.sumSizes(ctx, snap.Messages())
	if err != nil {
		return backend.Status{}, fmt.Errorf("maildir: status of %s of %s: %w", mb.name, mb.u.acct.Name, err)
	}
	s.Size = size
	return s, nil
}

// locate returns the path and CRLF size of uid; with rescan it first
// looks at the directories again (the file moved: another process changed
// its flags).
func (mb *mailbox) locate(ctx context.Context, uid backend.UID, rescan bool) (string, backend.Message, error) {
	st := mb.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if rescan {
		if err := st.rescan(ctx, nil); err != nil {
			return "", backend.Message{}, err
		}
	}
	i := st.find(uid)
	if i < 0 || !st.locs[i].known {
		return "", backend.Message{}, fmt.Errorf("maildir: %w: UID %d in %s", backend.ErrNoSuchMessage, uid, mb.name)
	}
	return st.path(i), st.msgs[i], nil
}

func (mb *mailbox) MessageSize(ctx context.Context, uid backend.UID) (int64, error) {
	for _, rescan := range []bool{false, true} {
		p, m, err := mb.locate(ctx, uid, rescan)
		if errors.Is(err, backend.ErrNoSuchMessage) && !rescan {
			continue
		}
		if err != nil {
			return 0, err
		}
		n, err := mb.st.messageSize(p, m)
		if errors.Is(err, fs.ErrNotExist) {
			continue // moved (flags changed elsewhere) or expunged: look again
		}
		if err != nil {
			return 0, fmt.Errorf("maildir: size of message %d in %s: %w", uid, mb.name, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("maildir: %w: UID %d in %s", backend.ErrNoSuchMessage, uid, mb.name)
}

func (mb *mailbox) OpenMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error) {
	f, m, err := mb.openFile(ctx, uid)
	if err != nil {
		return nil, err
	}
	size := m.Size
	if size < 0 {
		if n, ok := mb.st.sizeNow(uid, m.Key); ok {
			size = n
		}
	}
	if size >= 0 {
		return newCRLFReader(f, size), nil
	}
	// Not measured: stream to the end (exactly MessageSize octets, the
	// file never changes) and note the size if the reader gets there.
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("maildir: open message %d in %s: %w", uid, mb.name, err)
	}
	st, key := mb.st, m.Key
	return newCRLFReaderToEOF(f, fi.Size(), func(n int64) { st.recordSize(key, n) }), nil
}

// OpenRawMessage streams the message file as stored, with the LF line ends
// Postfix writes, unconverted; its CRLF form is MessageSize octets.
// pop3d turns LF into CRLF while dot-stuffing, in one pass, which keeps a
// large RETR near the speed of copying the file.
func (mb *mailbox) OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error) {
	f, _, err := mb.openFile(ctx, uid)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// openFile opens uid's file, looking at the directories again if it moved
// (another process changed its flags).
func (mb *mailbox) openFile(ctx context.Context, uid backend.UID) (*os.File, backend.Message, error) {
	for _, rescan := range []bool{false, true} {
		p, m, err := mb.locate(ctx, uid, rescan)
		if errors.Is(err, backend.ErrNoSuchMessage) && !rescan {
			continue
		}
		if err != nil {
			return nil, m, err
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, m, fmt.Errorf("maildir: open message %d in %s: %w", uid, mb.name, err)
		}
		return f, m, nil
	}
	return nil, backend.Message{}, fmt.Errorf("maildir: %w: UID %d in %s", backend.ErrNoSuchMessage, uid, mb.name)
}

// pending is a message file prepared in a mailbox's tmp/, waiting for its
// rename into new/ or cur/ and its UID.
type pending struct {
	tmp      string
	key      string
	flags    backend.Flags
	keywords []string
	size     int64 // CRLF size
	phys     int64
	date     time.Time
	info     string // kept from a copied file (unknown flag letters)
	srcUID   backend.UID
}

func (mb *mailbox) Append(ctx context.Context, r io.Reader, opts backend.AppendOptions) (backend.AppendResult, error) {
	for _, k := range opts.Keywords {
		if !validKeyword(k) {
			return backend.AppendResult{}, fmt.Errorf("maildir: keyword %q is not a valid IMAP atom", k)
		}
	}
	p, err := mb.writeTmp(ctx, r)
	if err != nil {
		return backend.AppendResult{}, err
	}
	if !opts.IgnoreQuota && mb.counted {
		if err := mb.u.checkQuota(p.phys, 1); err != nil {
			os.Remove(p.tmp)
			return backend.AppendResult{}, err
		}
	}
	p.flags = opts.Flags & allFlags
	p.keywords = opts.Keywords
	p.date = opts.InternalDate
	if p.date.IsZero() {
		p.date = time.Now()
	}
	if err := os.Chtimes(p.tmp, p.date, p.date); err != nil {
		os.Remove(p.tmp)
		return backend.AppendResult{}, fmt.Errorf("maildir: set date of new message: %w", err)
	}
	msgs, err := mb.st.deliver(ctx, []pending{p})
	if err != nil {
		return backend.AppendResult{}, fmt.Errorf("maildir: append to %s of %s: %w", mb.name, mb.u.acct.Name, err)
	}
	if mb.counted {
		mb.u.quotaDelta(p.phys, 1)
	}
	return backend.AppendResult{UIDValidity: mb.st.uidValidityNow(), UID: msgs[0].UID, Size: p.size}, nil
}

const allFlags = backend.FlagSeen | backend.FlagAnswered | backend.FlagFlagged | backend.FlagDeleted | backend.FlagDraft

// writeTmp copies r into a new file in tmp/, counting its CRLF size.
func (mb *mailbox) writeTmp(ctx context.Context, r io.Reader) (pending, error) {
	base := mb.u.s.names.next()
	p := pending{tmp: filepath.Join(mb.st.dir, "tmp", base)}
	f, err := os.OpenFile(p.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return p, fmt.Errorf("maildir: create %s: %w", p.tmp, err)
	}
	fail := func(err error) (pending, error) {
		f.Close()
		os.Remove(p.tmp)
		return p, err
	}
	buf := make([]byte, 64*1024)
	prevCR := false
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		n, rerr := r.Read(buf)
		for _, c := range buf[:n] {
			if c == '\n' && !prevCR {
				p.size++
			}
			prevCR = c == '\r'
		}
		p.size += int64(n)
		p.phys += int64(n)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return fail(fmt.Errorf("maildir: write %s: %w", p.tmp, err))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fail(fmt.Errorf("maildir: read message: %w", rerr))
		}
	}
	if mb.u.s.opts.Fsync {
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("maildir: fsync %s: %w", p.tmp, err))
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(p.tmp)
		return p, fmt.Errorf("maildir: write %s: %w", p.tmp, err)
	}
	if err := mb.u.own.chown(p.tmp); err != nil {
		os.Remove(p.tmp)
		return p, err
	}
	p.key = fmt.Sprintf("%s,S=%d,W=%d", base, p.phys, p.size)
	return p, nil
}
