package maildir

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Change detection for long-lived readers (IMAP IDLE): one inotify
// descriptor per Store (inotify.go) watching the new/ and cur/ directories
// of open mailboxes; where inotify is unavailable or fails (NFS, instance
// limits), a goroutine polls the directories' identities every
// Options.PollInterval.

type watchHub struct {
	w        *hubWatcher
	log      *slog.Logger
	mu       sync.Mutex              // held while adding or removing watches
	wds      map[int32][]watchTarget // watch descriptor -> who watches it
	expected map[string]time.Time    // paths this process is changing
	swept    time.Time               // last sweep of expired expectations
}

// watchTarget is one watched directory of an open mailbox. Two paths of
// one directory share a watch descriptor, hence a list per descriptor.
type watchTarget struct {
	dir string
	st  *mboxState
}

// hubWatcher owns the inotify descriptor and its reader goroutine.
type hubWatcher struct {
	in   *inotifyFD
	done chan struct{} // closed when the reader has returned
}

// Close closes the descriptor and waits for the reader to return, so that
// neither outlives the Store.
func (w *hubWatcher) Close() error {
	err := w.in.close()
	<-w.done
	return err
}

// expectTTL bounds how long an expected event is waited for.
const expectTTL = 10 * time.Second

// expect records that this process is about to change paths in st, so
// that their inotify events do not mark st as changed by someone else.
func (s *Store) expect(st *mboxState, paths ...string) {
	if !st.watched.Load() {
		return
	}
	s.mu.Lock()
	h := s.hub
	s.mu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	// Swept at most once per expectTTL, so that a bulk operation that
	// registers faster than inotify drains stays linear.
	if len(h.expected) > 10000 && now.Sub(h.swept) > expectTTL {
		h.swept = now
		for p, t := range h.expected {
			if now.Sub(t) > expectTTL {
				delete(h.expected, p)
			}
		}
	}
	for _, p := range paths {
		h.expected[p] = now
	}
}

func newWatchHub(log *slog.Logger) (*watchHub, error) {
	in, err := newInotifyFD()
	if err != nil {
		return nil, err
	}
	h := &watchHub{w: &hubWatcher{in: in, done: make(chan struct{})}, log: log,
		wds: map[int32][]watchTarget{}, expected: map[string]time.Time{}}
	go h.run()
	return h, nil
}

// add watches dir for st. Held across the system call, h.mu keeps the
// reader from looking up the new descriptor before it is recorded.
func (h *watchHub) add(dir string, st *mboxState) (int32, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wd, err := h.w.in.add(dir)
	if err != nil {
		return -1, err
	}
	h.wds[wd] = append(h.wds[wd], watchTarget{dir, st})
	return wd, nil
}

// remove undoes add, dropping the kernel's watch with its last user.
func (h *watchHub) remove(wd int32, dir string, st *mboxState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ts := slices.DeleteFunc(h.wds[wd], func(t watchTarget) bool { return t.dir == dir && t.st == st })
	if len(ts) > 0 {
		h.wds[wd] = ts
		return
	}
	if _, ok := h.wds[wd]; ok {
		delete(h.wds, wd)
		h.w.in.remove(wd)
	}
}

// watch starts change detection for st and returns its stop function.
// Caller holds s.mu.
func (s *Store) watch(st *mboxState) func() {
	subs := []string{filepath.Join(st.dir, "new"), filepath.Join(st.dir, "cur")}
	if s.opts.Poll {
		stopPoll := s.poll(st, subs)
		stopWatch := s.inotify(st, subs)
		return func() {
			stopPoll()
			if stopWatch != nil {
				stopWatch()
			}
		}
	}
	if stop := s.inotify(st, subs); stop != nil {
		return stop
	}
	return s.poll(st, subs)
}

// inotify watches subs for st, or returns nil if it cannot. Caller holds
// s.mu.
func (s *Store) inotify(st *mboxState, subs []string) func() {
	if s.noInotify {
		return nil
	}
	if s.hub == nil {
		h, err := newWatchHub(s.log)
		if err != nil {
			s.log.Info("inotify unavailable; polling mailboxes for changes", "err", err, "interval", s.opts.PollInterval)
			return nil
		}
		s.hub = h
	}
	h := s.hub
	wds := make([]int32, 0, len(subs))
	for _, d := range subs {
		wd, err := h.add(d, st)
		if err != nil {
			for i, wd := range wds {
				h.remove(wd, subs[i], st)
			}
			s.log.Info("cannot watch mailbox; polling it", "dir", st.dir, "err", err)
			return nil
		}
		wds = append(wds, wd)
	}
	st.watched.Store(true)
	return func() {
		for i, wd := range wds {
			h.remove(wd, subs[i], st)
		}
	}
}

// run reads events until the descriptor is closed.
func (h *watchHub) run() {
	defer close(h.w.done)
	buf := make([]byte, inotifyBuf)
	for {
		n, err := h.w.in.read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// Never seen in practice; without events, every open mailbox
			// must look at its directories on each Sync.
			h.log.Error("inotify read failed; open mailboxes are rescanned on every command", "err", err)
			h.each(func(t watchTarget) { t.st.watched.Store(false) })
			return
		}
		if err := parseInotify(buf[:n], h.event); err != nil {
			h.log.Error("inotify returned a malformed event; rescanning open mailboxes", "err", err)
			h.each(func(watchTarget) {})
		}
	}
}

// each calls fn for every watched directory, then tells its mailbox that
// it may have changed.
func (h *watchHub) each(fn func(watchTarget)) {
	h.mu.Lock()
	var all []watchTarget
	for _, ts := range h.wds {
		all = append(all, ts...)
	}
	h.mu.Unlock()
	for _, t := range all {
		fn(t)
		t.st.notify()
	}
}

// event handles one inotify event.
func (h *watchHub) event(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		// Events were lost: every open mailbox may have changed.
		h.log.Warn("inotify queue overflowed; rescanning open mailboxes")
		h.each(func(watchTarget) {})
		return
	}
	h.mu.Lock()
	ts := h.wds[wd]
	if mask&unix.IN_IGNORED != 0 {
		// The kernel dropped a watch Roost did not remove (the directory
		// was deleted): from now on only a listing tells what changed.
		delete(h.wds, wd)
		for _, t := range ts {
			t.st.watched.Store(false)
		}
	}
	var tell []watchTarget
	for _, t := range ts {
		if name != "" {
			p := t.dir + "/" + name
			if at, own := h.expected[p]; own {
				delete(h.expected, p)
				if time.Since(at) < expectTTL {
					continue
				}
			}
		}
		tell = append(tell, t)
	}
	h.mu.Unlock()
	self := mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0
	for _, t := range tell {
		if !self && filepath.Base(t.dir) == "new" {
			t.st.notifyNew()
		} else {
			t.st.notify()
		}
	}
}

// racyWindow is how long after a directory's mtime a poll keeps treating it
// as possibly changed.
const racyWindow = time.Second

func (s *Store) poll(st *mboxState, subs []string) func() {
	stop := make(chan struct{})
	// The baseline is taken before returning, so a change made right after
	// the mailbox was opened cannot slip into it.
	ids := make([]fileID, len(subs))
	for i, d := range subs {
		ids[i] = statID(d)
	}
	go func() {
		t := time.NewTicker(s.opts.PollInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			changed, onlyNew := false, true
			now := time.Now().UnixNano()
			for i, d := range subs {
				id := statID(d)
				// Directory mtimes come from a coarse kernel clock: a
				// second change within the same tick leaves the mtime as
				// it was. Until the mtime is older than a tick, it proves
				// nothing, so look again (git's "racy timestamp" rule).
				if id != ids[i] || now-id.mtime < int64(racyWindow) {
					ids[i], changed = id, true
					onlyNew = onlyNew && filepath.Base(d) == "new"
				}
			}
			switch {
			case changed && onlyNew:
				st.notifyNew()
			case changed:
				st.notify()
			}
		}
	}()
	return func() { close(stop) }
}
