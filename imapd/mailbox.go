package imapd

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/roost-mail/roost/backend"
)

// mailboxState is the one per-process state of an open mailbox, shared by
// every session that has it selected: one store handle, the newest
// snapshot, and which new messages some session here has already claimed
// as \Recent. Sessions turn differences between the snapshot they last
// told their client about and the current one into EXISTS, EXPUNGE and
// FETCH responses, so a change made by any process reaches every session.
type mailboxState struct {
	key   string // immutable: user + "\x00" + store name
	ready chan struct{}
	err   error           // set before ready is closed
	mbox  backend.Mailbox // set before ready is closed
	user  *userRef        // immutable; keeps the handle mbox came from open
	refs  int             // guarded by Server.mu
	// linger closes the mailbox a while after its last session left, so
	// that a client reconnecting finds it open; guarded by Server.mu.
	linger *time.Timer

	mu         sync.Mutex
	synced     time.Time // when snap was last checked against the store
	snap       *backend.Snapshot
	updated    chan struct{} // closed when snap is replaced
	recentNext backend.UID   // UIDs from here on are not yet \Recent anywhere
}

// openMailbox returns the shared state of mailbox name of user, opening it
// if this process has not. The caller must releaseMailbox it.
func (s *Server) openMailbox(ctx context.Context, user *userRef, name string) (*mailboxState, error) {
	key := user.name + "\x00" + name
	s.mu.Lock()
	st := s.mailboxes[key]
	if st != nil {
		st.refs++
		st.stopLingerLocked()
		s.mu.Unlock()
		<-st.ready
		if st.err != nil {
			s.releaseMailbox(st)
			return nil, st.err
		}
		return st, nil
	}
	st = &mailboxState{key: key, refs: 1, ready: make(chan struct{}), user: user}
	user.refs++
	s.mailboxes[key] = st
	s.mu.Unlock()

	mb, err := user.u.OpenMailbox(ctx, name)
	var snap *backend.Snapshot
	if err == nil {
		if snap, err = mb.Sync(ctx); err != nil {
			mb.Close()
		}
	}
	if err != nil {
		st.err = err
		s.mu.Lock()
		if s.mailboxes[key] == st {
			delete(s.mailboxes, key)
		}
		s.mu.Unlock()
		close(st.ready)
		s.releaseMailbox(st)
		return nil, err
	}
	st.mbox, st.snap, st.updated, st.recentNext, st.synced = mb, snap, make(chan struct{}), snap.UIDNext, time.Now()
	close(st.ready)
	return st, nil
}

// lookupMailbox returns the state of a mailbox this process has open, or
// nil. A non-nil result must be released.
func (s *Server) lookupMailbox(username, name string) *mailboxState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.mailboxes[username+"\x00"+name]
	if st == nil {
		return nil
	}
	select {
	case <-st.ready:
		if st.err != nil {
			return nil
		}
	default:
		return nil
	}
	st.refs++
	st.stopLingerLocked()
	return st
}

func (st *mailboxState) stopLingerLocked() {
	if st.linger != nil {
		st.linger.Stop()
		st.linger = nil
	}
}

// releaseMailbox drops a reference. The last one leaves the mailbox open
// for Options.MailboxLinger, then closes it.
func (s *Server) releaseMailbox(st *mailboxState) {
	s.mu.Lock()
	st.refs--
	if st.refs > 0 {
		s.mu.Unlock()
		return
	}
	if st.err == nil && !s.closing && s.opts.MailboxLinger > 0 && s.mailboxes[st.key] == st {
		st.linger = time.AfterFunc(s.opts.MailboxLinger, func() { s.expireMailbox(st) })
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.expireMailbox(st)
}

// expireMailbox closes st unless a session took it up again.
func (s *Server) expireMailbox(st *mailboxState) {
	s.mu.Lock()
	if st.refs > 0 {
		s.mu.Unlock()
		return
	}
	st.stopLingerLocked()
	if s.mailboxes[st.key] == st {
		delete(s.mailboxes, st.key)
	}
	s.mu.Unlock()
	if st.mbox != nil {
		st.mbox.Close()
	}
	s.releaseUser(st.user)
}

// userRef is the one store handle per user in this process, shared by the
// user's sessions and open mailboxes. Limits are those of the login that
// opened it.
type userRef struct {
	name  string // immutable
	ready chan struct{}
	u     backend.User // set before ready is closed
	err   error        // set before ready is closed
	refs  int          // guarded by Server.mu
}

// acquireUser returns the shared handle of acct's mail, opening it if
// needed. The caller must releaseUser it.
func (s *Server) acquireUser(ctx context.Context, acct backend.Account) (*userRef, error) {
	s.mu.Lock()
	ur := s.users[acct.Name]
	if ur != nil {
		ur.refs++
		s.mu.Unlock()
		<-ur.ready
		if ur.err != nil {
			s.releaseUser(ur)
			return nil, ur.err
		}
		return ur, nil
	}
	ur = &userRef{name: acct.Name, ready: make(chan struct{}), refs: 1}
	s.users[acct.Name] = ur
	s.mu.Unlock()
	ur.u, ur.err = s.opts.Store.Open(ctx, acct)
	if ur.err != nil {
		s.mu.Lock()
		if s.users[acct.Name] == ur {
			delete(s.users, acct.Name)
		}
		s.mu.Unlock()
		close(ur.ready)
		err := ur.err
		s.releaseUser(ur)
		return nil, err
	}
	close(ur.ready)
	return ur, nil
}

func (s *Server) releaseUser(ur *userRef) {
	s.mu.Lock()
	ur.refs--
	last := ur.refs == 0
	if last && s.users[ur.name] == ur {
		delete(s.users, ur.name)
	}
	s.mu.Unlock()
	if last && ur.u != nil {
		ur.u.Close()
	}
}

// current returns the newest snapshot and a channel closed when it is
// replaced.
func (st *mailboxState) current() (*backend.Snapshot, <-chan struct{}) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.snap, st.updated
}

// refreshAfter is how old a snapshot may get before sync checks the store
// even though the store signalled no change: notifications can lag on a
// loaded machine and are absent on some file systems, and a client that
// sends NOOP to look for mail must find it.
const refreshAfter = time.Second

// sync returns the current snapshot, asking the store for a new one when
// the store said the mailbox may have changed or the snapshot was last
// checked more than refreshAfter ago (a few stat calls when nothing
// changed).
func (st *mailboxState) sync(ctx context.Context) (*backend.Snapshot, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	select {
	case <-st.snap.Changed:
		return st.resyncLocked(ctx)
	default:
	}
	if time.Since(st.synced) >= refreshAfter {
		return st.resyncLocked(ctx)
	}
	return st.snap, nil
}

// forceSync asks the store for a new snapshot; sessions call it after
// they change the mailbox.
func (st *mailboxState) forceSync(ctx context.Context) (*backend.Snapshot, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.resyncLocked(ctx)
}

func (st *mailboxState) resyncLocked(ctx context.Context) (*backend.Snapshot, error) {
	ns, err := st.mbox.Sync(ctx)
	if err != nil {
		return st.snap, err
	}
	st.synced = time.Now()
	if ns != st.snap {
		st.snap = ns
		close(st.updated)
		st.updated = make(chan struct{})
	}
	return ns, nil
}

// claimRecent returns the UIDs of snap that no session of this process
// has seen yet, and marks them seen: RFC 3501 gives \Recent to exactly one
// session. Roost keeps \Recent per process, as design.md decides.
func (st *mailboxState) claimRecent(snap *backend.Snapshot) []backend.UID {
	st.mu.Lock()
	defer st.mu.Unlock()
	if snap.Summary().LastUID < st.recentNext {
		return nil // without waiting for a list still being decoded
	}
	msgs := snap.Messages()
	i := sort.Search(len(msgs), func(i int) bool { return msgs[i].UID >= st.recentNext })
	if i == len(msgs) {
		return nil
	}
	uids := make([]backend.UID, 0, len(msgs)-i)
	for _, m := range msgs[i:] {
		uids = append(uids, m.UID)
	}
	st.recentNext = msgs[len(msgs)-1].UID + 1
	return uids
}
