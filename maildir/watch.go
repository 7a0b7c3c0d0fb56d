package maildir

import (
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Change detection for long-lived readers (IMAP IDLE): one inotify watcher
// per Store on the new/ and cur/ directories of open mailboxes; where
// inotify is unavailable or fails (NFS, instance limits), a goroutine polls
// the directories' identities every Options.PollInterval.

type watchHub struct {
	w        *fsnotify.Watcher
	mu       sync.Mutex            // never held while calling w
	dirs     map[string]*mboxState // watched directory -> state
	expected map[string]time.Time  // paths this process is changing
	swept    time.Time             // last sweep of expired expectations
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

func (h *watchHub) set(d string, st *mboxState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st == nil {
		delete(h.dirs, d)
	} else {
		h.dirs[d] = st
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

// inotify watches subs for st, or returns nil if it cannot.
func (s *Store) inotify(st *mboxState, subs []string) func() {
	if s.noInotify {
		return nil
	}
	if s.hub == nil {
		w, err := fsnotify.NewWatcher()
		if err == nil {
			s.hub = &watchHub{w: w, dirs: map[string]*mboxState{}, expected: map[string]time.Time{}}
			go s.runHub(s.hub)
		} else {
			s.log.Info("inotify unavailable; polling mailboxes for changes", "err", err, "interval", s.opts.PollInterval)
		}
	}
	if s.hub != nil {
		var added []string
		var err error
		for _, d := range subs {
			if err = s.hub.w.Add(d); err != nil {
				break
			}
			added = append(added, d)
			s.hub.set(d, st)
		}
		if err == nil {
			hub := s.hub
			st.watched.Store(true)
			return func() { // called with s.mu held
				for _, d := range added {
					hub.set(d, nil)
					_ = hub.w.Remove(d)
				}
			}
		}
		for _, d := range added {
			s.hub.set(d, nil)
			_ = s.hub.w.Remove(d)
		}
		s.log.Info("cannot watch mailbox; polling it", "dir", st.dir, "err", err)
	}
	return nil
}

func (s *Store) runHub(h *watchHub) {
	for {
		select {
		case ev, ok := <-h.w.Events:
			if !ok {
				return
			}
			dir := filepath.Dir(ev.Name)
			h.mu.Lock()
			st := h.dirs[dir]
			t, own := h.expected[ev.Name]
			if own {
				delete(h.expected, ev.Name)
				own = time.Since(t) < expectTTL
			}
			h.mu.Unlock()
			if st != nil && !own {
				if filepath.Base(dir) == "new" {
					st.notifyNew()
				} else {
					st.notify()
				}
			}
		case err, ok := <-h.w.Errors:
			if !ok {
				return
			}
			// Lost events (queue overflow): tell every open mailbox.
			s.log.Warn("inotify error; rescanning open mailboxes", "err", err)
			h.mu.Lock()
			var all []*mboxState
			for _, st := range h.dirs {
				all = append(all, st)
			}
			h.mu.Unlock()
			for _, st := range all {
				st.notify()
			}
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
