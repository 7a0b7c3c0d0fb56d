package maildir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/backend"
)

// Sizes of messages other programs wrote. A file Postfix delivers has no
// ",W=" in its name, so its CRLF size (RFC822.SIZE, POP3 LIST) is known
// only by reading it. Opening a mailbox does not read such files, as
// Dovecot does not: their Message.Size is -1 and only their date is taken
// (one stat). A background measurer per mailbox state then reads them
// outside st.mu, publishes a snapshot with the sizes and records them as W
// fields in dovecot-uidlist, so that no process, Roost's or Dovecot's,
// reads them again for that. MessageSize, OpenMessage, Status and Copy
// measure on demand whatever is still unknown. Every measurement goes to
// st.sizes (by base name; a delivered file never changes) until it is
// applied to st.msgs, so that no file is measured twice.

// measureFlush is how often a long measurement publishes and records what
// it has: a 100,000-line uidlist is rewritten at most this often.
const measureFlush = 5 * time.Second

// measureDelay is how long the measurer waits before it starts: a client
// follows SELECT with a burst (UID FETCH 1:* (FLAGS) and the new headers),
// which should not share the CPU with 100,000 file reads.
const measureDelay = time.Second

// measureBuf is the read size for measuring messages: most are read in
// one call.
const measureBuf = 64 << 10

// measureSlots is how many mailboxes a Store measures at once: after a
// migration thousands of users may log in to unmeasured mailboxes, and
// their measurers would otherwise all read files at the same time.
const measureSlots = 2

// background runs the Store's goroutines that outlive a call: the size
// measurers and the settling of roost-cache. Store.Close stops them and
// waits. The zero value is ready.
type background struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
	wg     sync.WaitGroup
	slots  chan struct{} // a token per mailbox being measured
}

// acquire waits for a measuring slot; false if ctx ended first.
func (g *background) acquire(ctx context.Context) bool {
	g.mu.Lock()
	if g.slots == nil {
		g.slots = make(chan struct{}, measureSlots)
	}
	slots := g.slots
	g.mu.Unlock()
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *background) release() { <-g.slots }

// start runs f in a goroutine unless the Store is closing.
func (g *background) start(f func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f(g.ctx)
	}()
	return true
}

// stop cancels every measurer and waits for them to return.
func (g *background) stop() {
	g.mu.Lock()
	g.closed = true
	if g.cancel != nil {
		g.cancel()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// sizeWork is a message to measure and where its file was last seen (a
// loc, not a path: a 100,000-message list stays small).
type sizeWork struct {
	uid backend.UID
	key string
	lc  loc
}

// startMeasuring starts the state's measurer if the published snapshot
// has messages of unknown size and none runs. The measurer holds a
// reference on the state, so a quick logout does not throw its work away;
// Store.Close stops it. Caller holds st.mu.
func (st *mboxState) startMeasuring() {
	if st.s.opts.NoSizeMeasurer || st.measuring || st.snap == nil || st.snap == st.sizeChecked {
		return
	}
	st.sizeChecked = st.snap
	if !slices.ContainsFunc(st.snap.Messages(), func(m backend.Message) bool { return m.Size < 0 }) {
		return
	}
	st.s.mu.Lock()
	st.refs++
	st.s.mu.Unlock()
	st.measuring = true
	if !st.s.bg.start(st.measureAll) {
		st.measuring = false
		st.s.releaseState(st)
	}
}

// measureAll is the background measurer: it reads every file of unknown
// size, then applies and records the sizes (every measureFlush, and at
// the end). Messages that arrive meanwhile are measured in a further
// round; a file that cannot be read is left to MessageSize.
func (st *mboxState) measureAll(ctx context.Context) {
	defer st.s.releaseState(st)
	defer func() {
		st.mu.Lock()
		st.measuring = false
		st.mu.Unlock()
	}()
	select {
	case <-ctx.Done():
		return
	case <-time.After(measureDelay):
	}
	if !st.s.bg.acquire(ctx) {
		return
	}
	defer st.s.bg.release()
	buf := make([]byte, measureBuf)
	last := time.Now()
	var after backend.UID
	for {
		st.mu.Lock()
		work := st.unsized(after)
		st.mu.Unlock()
		if len(work) == 0 {
			return
		}
		after = work[len(work)-1].uid
		// Highest UID first: a client asking for sizes in order (POP3's
		// login, FETCH 1:* RFC822.SIZE) meets the measurer half-way
		// instead of racing it for the same files.
		for i := len(work) - 1; i >= 0; i-- {
			if ctx.Err() != nil {
				return
			}
			st.measureWork(&work[i], buf)
			if time.Since(last) >= measureFlush {
				st.applySizes(ctx)
				last = time.Now()
			}
		}
		st.applySizes(ctx)
		last = time.Now()
	}
}

// unsized lists the messages above UID after whose size is unknown and
// whose file was seen. Caller holds st.mu.
func (st *mboxState) unsized(after backend.UID) []sizeWork {
	var work []sizeWork
	for i := range st.msgs {
		m := &st.msgs[i]
		if m.UID > after && m.Size < 0 && st.locs[i].known {
			work = append(work, sizeWork{uid: m.UID, key: m.Key, lc: st.locs[i]})
		}
	}
	return work
}

// measureWork measures one message unless its size is known by now, and
// records it. A file gone from where it was is looked for where this
// process last saw it (another process may have renamed it for a flag
// change); a file gone for good is skipped. It returns the size and
// whether it is known.
func (st *mboxState) measureWork(w *sizeWork, buf []byte) (int64, bool) {
	if n, ok := st.sizeNow(w.uid, w.key); ok {
		return n, true
	}
	n, err := st.readSize(st.filePath(w.key, w.lc), buf)
	if errors.Is(err, fs.ErrNotExist) {
		st.mu.Lock()
		lc := w.lc
		if i := st.find(w.uid); i >= 0 && st.msgs[i].Key == w.key && st.locs[i].known {
			lc = st.locs[i]
		}
		st.mu.Unlock()
		if lc == w.lc {
			return 0, false
		}
		n, err = st.readSize(st.filePath(w.key, lc), buf)
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			st.s.log.Warn("cannot read message file for its size; measured again when a client needs it", "dir", st.dir, "err", err)
		}
		return 0, false
	}
	st.recordSize(w.key, n)
	return n, true
}

// sizeNow returns the size of the message uid with base name key if it is
// known: in st.msgs, or measured and not applied yet. Caller must not hold
// st.mu.
func (st *mboxState) sizeNow(uid backend.UID, key string) (int64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if i := st.find(uid); i >= 0 && st.msgs[i].Key == key && st.msgs[i].Size >= 0 {
		return st.msgs[i].Size, true
	}
	st.sizeMu.Lock()
	defer st.sizeMu.Unlock()
	n, ok := st.sizes[key]
	return n, ok
}

// recordSize notes a measured size until the measurer applies it.
func (st *mboxState) recordSize(key string, n int64) {
	st.sizeMu.Lock()
	defer st.sizeMu.Unlock()
	if st.sizes == nil {
		st.sizes = map[string]int64{}
	}
	st.sizes[key] = n
}

// applySizes moves the recorded sizes into a copy of st.msgs, records them
// in the uidlist (W fields) when there are enough to be worth rewriting
// it, and publishes a snapshot of the same messages with their sizes,
// closing Changed so that waiting sessions pick it up. Sizes of messages
// no longer listed are dropped.
func (st *mboxState) applySizes(ctx context.Context) {
	if ctx.Err() != nil {
		return // the Store is closing: the next process measures again
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sizeMu.Lock()
	sizes := st.sizes
	st.sizes = nil
	st.sizeMu.Unlock()
	if len(sizes) == 0 {
		return
	}
	if !worthRecording(fillable(st.msgs, sizes), len(st.msgs)) {
		// A few sizes (new deliveries) are not worth copying the message
		// list and rewriting the uidlist: they stay noted, for
		// MessageSize, and the next rebuild of the list takes them in.
		st.keepUnapplied(sizes)
		return
	}
	st.recordSizes(ctx, sizes)
	if msgs, n := withSizes(st.msgs, sizes); n > 0 {
		st.msgs = msgs
	}
	if st.snap == nil {
		return // the next Sync lists the directories and builds from st.msgs
	}
	vis, k := withSizes(st.snap.Messages(), sizes)
	if k == 0 {
		return
	}
	st.chMu.Lock()
	close(st.changed)
	st.changed = make(chan struct{})
	ch := st.changed
	st.chMu.Unlock()
	old := st.snap
	st.snap = backend.NewSnapshot(old.UIDValidity, old.UIDNext, vis[:len(vis):len(vis)], ch)
	st.sizeChecked = st.snap
}

// worthRecording reports whether n new sizes in a mailbox of total
// messages are worth a copy of its message list and a rewrite of its
// uidlist: a few sizes of new deliveries are not (each would copy and
// rewrite 100,000 entries; another process measures those few files
// itself, and the next rewrite records them anyway), a first open's are.
func worthRecording(n, total int) bool {
	return n >= 4096 || n*32 >= total
}

// keepUnapplied puts back the sizes of messages still without one in
// st.msgs. Caller holds st.mu.
func (st *mboxState) keepUnapplied(sizes map[string]int64) {
	unknown := make(map[string]bool, len(sizes))
	for i := range st.msgs {
		if st.msgs[i].Size < 0 {
			if _, ok := sizes[st.msgs[i].Key]; ok {
				unknown[st.msgs[i].Key] = true
			}
		}
	}
	st.sizeMu.Lock()
	defer st.sizeMu.Unlock()
	for k, n := range sizes {
		if !unknown[k] {
			continue
		}
		if st.sizes == nil {
			st.sizes = map[string]int64{}
		}
		st.sizes[k] = n
	}
}

// noted fills in the sizes noted for messages of unknown size in a list
// being built (not published yet). Caller holds st.mu.
func (st *mboxState) noted(msgs []backend.Message) {
	st.sizeMu.Lock()
	defer st.sizeMu.Unlock()
	if len(st.sizes) == 0 {
		return
	}
	for i := range msgs {
		if msgs[i].Size < 0 {
			if n, ok := st.sizes[msgs[i].Key]; ok {
				msgs[i].Size = n
			}
		}
	}
}

// recordSizes rewrites the uidlist with sizes applied, under its lock:
// records another process wrote meanwhile are read first, so that the
// rewrite keeps them. A failure only means other processes measure
// again. Caller holds st.mu.
func (st *mboxState) recordSizes(ctx context.Context, sizes map[string]int64) {
	lk, err := st.lockUidlist(ctx)
	if err != nil {
		st.s.log.Warn("message sizes not recorded in dovecot-uidlist; other processes measure them again", "dir", st.dir, "err", err)
		return
	}
	defer func() {
		if err := lk.release(); err != nil {
			st.s.log.Error("release uidlist lock", "dir", st.dir, "err", err)
		}
	}()
	if err := st.ensureLoaded(true); err != nil {
		st.s.log.Warn("message sizes not recorded in dovecot-uidlist; other processes measure them again", "dir", st.dir, "err", err)
		return
	}
	msgs, n := withSizes(st.msgs, sizes)
	if n == 0 {
		return
	}
	if err := st.writeUidlist(msgs, -1); err != nil {
		st.s.log.Warn("message sizes not recorded in dovecot-uidlist; other processes measure them again", "dir", st.dir, "err", err)
		return
	}
	st.msgs = msgs
	st.mustWrite = false
}

// fillable counts the messages of unknown size in msgs that sizes has a
// size for: what withSizes would fill, without copying msgs.
func fillable(msgs []backend.Message, sizes map[string]int64) int {
	n := 0
	for i := range msgs {
		if msgs[i].Size < 0 {
			if _, ok := sizes[msgs[i].Key]; ok {
				n++
			}
		}
	}
	return n
}

// withSizes returns msgs with the sizes filled in that sizes has for
// messages of unknown size, and how many it filled. msgs is never
// modified: it may be published.
func withSizes(msgs []backend.Message, sizes map[string]int64) ([]backend.Message, int) {
	var out []backend.Message
	n := 0
	for i := range msgs {
		if msgs[i].Size >= 0 {
			continue
		}
		sz, ok := sizes[msgs[i].Key]
		if !ok {
			continue
		}
		if out == nil {
			out = slices.Clone(msgs)
		}
		out[i].Size = sz
		n++
	}
	if out == nil {
		return msgs, 0
	}
	return out, n
}

// sumSizes returns the total size of msgs (a snapshot's), measuring those
// of unknown size. Messages gone meanwhile count nothing.
func (st *mboxState) sumSizes(ctx context.Context, msgs []backend.Message) (int64, error) {
	var sum int64
	var work []sizeWork
	st.mu.Lock()
	for _, m := range msgs {
		if m.Size >= 0 {
			sum += m.Size
			continue
		}
		if i := st.find(m.UID); i >= 0 && st.msgs[i].Key == m.Key && st.locs[i].known {
			work = append(work, sizeWork{uid: m.UID, key: m.Key, lc: st.locs[i]})
		}
	}
	st.mu.Unlock()
	var buf []byte
	for i := range work {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if buf == nil {
			buf = make([]byte, measureBuf)
		}
		if n, ok := st.measureWork(&work[i], buf); ok {
			sum += n
		}
	}
	return sum, nil
}

// messageSize is MessageSize for a located message.
func (st *mboxState) messageSize(path string, m backend.Message) (int64, error) {
	if m.Size >= 0 {
		return m.Size, nil
	}
	if n, ok := st.sizeNow(m.UID, m.Key); ok {
		return n, nil
	}
	n, err := st.readSize(path, nil)
	if err != nil {
		return 0, err
	}
	st.recordSize(m.Key, n)
	return n, nil
}

func readBufFor(size int64) int64 { return min(measureBuf, max(size, 1)) }

// readSize reads a message file for its CRLF size. buf is scratch space,
// reused across calls; nil makes one sized to the file.
func (st *mboxState) readSize(path string, buf []byte) (int64, error) {
	st.sizeReads.Add(1)
	// Plain system calls: os.File's set-up (a non-blocking fcntl, a poller
	// check) would cost a quarter of reading 100,000 small files.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var sb unix.Stat_t
	if err := unix.Fstat(fd, &sb); err != nil {
		return 0, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if sb.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("%s is not a regular file", path)
	}
	if buf == nil {
		buf = make([]byte, readBufFor(sb.Size))
	}
	// A delivered Maildir file never changes: its stat size is all there
	// is to read, which spares the read that would only see EOF.
	n, err := crlfSize(io.LimitReader(fdReader(fd), sb.Size), buf)
	if err != nil {
		return 0, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return n, nil
}

// dirStats stats message files by name through open descriptors of new/
// and cur/: no path walk per file and no os.FileInfo, so that numbering
// 100,000 new files costs one cheap system call each.
type dirStats struct {
	dir    string
	fds    [2]int // new/, cur/; -1 if opening failed
	opened [2]bool
}

// date returns the mtime (the INTERNALDATE) of a message file, which must
// be a regular file.
func (d *dirStats) date(inNew bool, name string) (time.Time, error) {
	sub, k := "cur", 1
	if inNew {
		sub, k = "new", 0
	}
	if !d.opened[k] {
		d.opened[k] = true
		fd, err := unix.Open(filepath.Join(d.dir, sub), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		d.fds[k] = fd
	}
	var sb unix.Stat_t
	var err error
	for {
		if d.fds[k] >= 0 {
			err = unix.Fstatat(d.fds[k], name, &sb, 0)
		} else {
			err = unix.Stat(filepath.Join(d.dir, sub, name), &sb)
		}
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return time.Time{}, &fs.PathError{Op: "stat", Path: filepath.Join(d.dir, sub, name), Err: err}
	}
	if sb.Mode&unix.S_IFMT != unix.S_IFREG {
		return time.Time{}, fmt.Errorf("%s is not a regular file", filepath.Join(d.dir, sub, name))
	}
	return time.Unix(sb.Mtim.Unix()), nil
}

func (d *dirStats) close() {
	for k, fd := range d.fds {
		if d.opened[k] && fd >= 0 {
			unix.Close(fd)
		}
	}
}

// fdReader reads a file descriptor, retrying interrupted reads.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// crlfLen returns the size c has with every bare LF made CRLF.
func crlfLen(c []byte) int64 {
	return int64(len(c) + bytes.Count(c, []byte("\n")) - bytes.Count(c, []byte("\r\n")))
}

// crlfSize returns the size r would have with every bare LF made CRLF,
// reading through buf.
func crlfSize(r io.Reader, buf []byte) (int64, error) {
	var n int64
	prevCR := false
	for {
		k, err := r.Read(buf)
		if k > 0 {
			c := buf[:k]
			n += crlfLen(c)
			if prevCR && c[0] == '\n' {
				n-- // a CRLF split across two reads
			}
			prevCR = c[k-1] == '\r'
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
