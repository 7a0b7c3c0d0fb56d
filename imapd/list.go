package imapd

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/roost-mail/roost/backend"
)

// List implements LIST and LSUB with LIST-EXTENDED (RFC 5258), LIST-STATUS
// (RFC 5819), SPECIAL-USE (RFC 6154) and CHILDREN (RFC 3348).
func (s *session) List(w *imapserver.ListWriter, ref string, patterns []string, opts *imap.ListOptions) error {
	defer s.timed("LIST")()
	if len(patterns) == 0 {
		// LIST "" "" asks for the delimiter and the root (RFC 3501 6.3.8).
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: s.srv.delim})
	}
	infos, err := s.user.ListMailboxes(s.ctx)
	if err != nil {
		return s.fail("list mailboxes", err)
	}
	type entry struct {
		name            string
		info            backend.MailboxInfo
		subscribedChild bool
		gone            bool // subscribed, but no such mailbox (any more)
	}
	var entries []entry
	byName := make(map[string]int)
	for _, info := range infos {
		name, ok := s.srv.toClient(info.Name)
		if !ok {
			continue
		}
		byName[name] = len(entries)
		entries = append(entries, entry{name: name, info: info})
	}
	// A namespace prefix such as "Mail/" shows as a \Noselect parent;
	// with Courier's "INBOX." every folder is a child of INBOX.
	if p := strings.TrimSuffix(s.srv.opts.NamespacePrefix, string(s.srv.delim)); strings.EqualFold(p, "INBOX") {
		if i, ok := byName["INBOX"]; ok && len(entries) > 1 {
			entries[i].info.HasChildren = true
		}
	} else if p != "" {
		if _, ok := byName[p]; !ok {
			byName[p] = len(entries)
			entries = append(entries, entry{name: p, info: backend.MailboxInfo{NoSelect: true, HasChildren: len(infos) > 1}})
		}
	}
	if sl, ok := s.user.(subscriptionLister); ok && opts.SelectSubscribed {
		subs, err := sl.Subscriptions(s.ctx)
		if err != nil {
			return s.fail("list subscriptions", err)
		}
		for _, sub := range subs {
			name, ok := s.srv.toClient(sub)
			if _, exists := byName[name]; !ok || exists {
				continue
			}
			byName[name] = len(entries)
			entries = append(entries, entry{name: name, info: backend.MailboxInfo{Name: sub, Subscribed: true}, gone: true})
		}
	}
	if opts.SelectSubscribed && opts.SelectRecursiveMatch {
		for _, e := range entries {
			if !e.info.Subscribed {
				continue
			}
			for n := e.name; ; {
				i := strings.LastIndexByte(n, byte(s.srv.delim))
				if i <= 0 {
					break
				}
				n = n[:i]
				if j, ok := byName[n]; ok {
					entries[j].subscribedChild = true
				}
			}
		}
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if (entries[i].name == "INBOX") != (entries[j].name == "INBOX") {
			return entries[i].name == "INBOX"
		}
		return entries[i].name < entries[j].name
	})
	for _, e := range entries {
		matched := false
		for _, p := range patterns {
			if s.srv.listMatch(e.name, ref, p) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		info := e.info
		if opts.SelectSubscribed && !info.Subscribed && !e.subscribedChild {
			continue
		}
		if opts.SelectSpecialUse && info.SpecialUse == "" {
			continue
		}
		data := &imap.ListData{Delim: s.srv.delim, Mailbox: e.name}
		if e.gone {
			data.Attrs = []imap.MailboxAttr{imap.MailboxAttrSubscribed, imap.MailboxAttrNonExistent}
			if err := w.WriteList(data); err != nil {
				return err
			}
			continue
		}
		if info.NoSelect {
			data.Attrs = append(data.Attrs, imap.MailboxAttrNoSelect)
		}
		if info.HasChildren {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if info.Subscribed && (opts.ReturnSubscribed || opts.SelectSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		if info.SpecialUse != "" {
			data.Attrs = append(data.Attrs, imap.MailboxAttr(info.SpecialUse))
		}
		if e.subscribedChild && !info.Subscribed {
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		if opts.ReturnStatus != nil && !info.NoSelect {
			st, err := s.status(info.Name, e.name, opts.ReturnStatus)
			if err == nil {
				data.Status = st
			}
		}
		if err := w.WriteList(data); err != nil {
			return err
		}
	}
	return nil
}

// subscriptionLister is a backend.User that can list subscriptions whose
// mailbox no longer exists (the maildir store can), which LSUB and LIST
// (SUBSCRIBED) show as \NonExistent (RFC 5258 3.1), as Dovecot does.
type subscriptionLister interface {
	Subscriptions(ctx context.Context) ([]string, error)
}

// Create implements CREATE, with CREATE-SPECIAL-USE (RFC 6154 3).
func (s *session) Create(name string, opts *imap.CreateOptions) error {
	name = strings.TrimSuffix(name, string(s.srv.delim)) // "foo/" announces children (RFC 3501 6.3.3)
	sname, err := s.srv.toStore(name)
	if err != nil {
		return err
	}
	if sname == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "INBOX always exists"}
	}
	var use string
	if len(opts.SpecialUse) > 1 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Only one special-use attribute per mailbox"}
	}
	if len(opts.SpecialUse) == 1 {
		use = specialUse(opts.SpecialUse[0])
		if use == "" {
			return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Unsupported special-use attribute"}
		}
	}
	if err := s.user.CreateMailbox(s.ctx, sname, use); err != nil {
		if errors.Is(err, backend.ErrLimit) {
			return errTooManyMailboxes
		}
		return s.fail("create mailbox", err)
	}
	return nil
}

// errTooManyMailboxes answers a CREATE or RENAME that would take the user
// past the store's limit on folders (imap.max_mailboxes).
var errTooManyMailboxes = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit,
	Text: "Too many mailboxes: delete some before creating more"}

func specialUse(attr imap.MailboxAttr) string {
	for _, u := range []string{backend.SpecialUseSent, backend.SpecialUseDrafts, backend.SpecialUseTrash,
		backend.SpecialUseJunk, backend.SpecialUseArchive} {
		if strings.EqualFold(string(attr), u) {
			return u
		}
	}
	return ""
}

// Delete implements DELETE. INBOX cannot be deleted and a mailbox with
// children is refused (the store keeps the children's mail safe).
func (s *session) Delete(name string) error {
	sname, err := s.srv.toStore(name)
	if err != nil {
		return err
	}
	if sname == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	}
	if err := s.user.DeleteMailbox(s.ctx, sname); err != nil {
		return s.fail("delete mailbox", err)
	}
	return nil
}

// Rename implements RENAME; children move along, and renaming INBOX moves
// its messages and leaves it empty (RFC 3501 6.3.5).
func (s *session) Rename(name, newName string, _ *imap.RenameOptions) error {
	from, err := s.srv.toStore(name)
	if err != nil {
		return err
	}
	to, err := s.srv.toStore(strings.TrimSuffix(newName, string(s.srv.delim)))
	if err != nil {
		return err
	}
	if to == "INBOX" {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAlreadyExists, Text: "INBOX always exists"}
	}
	if from != "INBOX" && strings.HasPrefix(to, from+"/") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "A mailbox cannot be moved below itself"}
	}
	if err := s.user.RenameMailbox(s.ctx, from, to); err != nil {
		if errors.Is(err, backend.ErrLimit) {
			return errTooManyMailboxes
		}
		return s.fail("rename mailbox", err)
	}
	return nil
}

func (s *session) Subscribe(name string) error   { return s.setSubscribed(name, true) }
func (s *session) Unsubscribe(name string) error { return s.setSubscribed(name, false) }

func (s *session) setSubscribed(name string, on bool) error {
	sname, err := s.srv.toStore(name)
	if err != nil {
		return err
	}
	if on {
		// RFC 9051 6.3.7 lets the server check that the mailbox exists;
		// Roost does, as Dovecot does, because LSUB and LIST (SUBSCRIBED)
		// show only existing mailboxes (the store lists no others), so a
		// subscription to a missing one would be accepted and never seen.
		if err := s.mustExist(sname); err != nil {
			return err
		}
	}
	if err := s.user.SetSubscribed(s.ctx, sname, on); err != nil {
		return s.fail("change subscription", err)
	}
	return nil
}

// mustExist fails with NO [NONEXISTENT] unless sname is a mailbox or a
// \Noselect parent of mailboxes.
func (s *session) mustExist(sname string) error {
	if len(sname) >= 5 && strings.EqualFold(sname[:5], "INBOX") && (len(sname) == 5 || sname[5] == '/') {
		sname = "INBOX" + sname[5:] // the store's spelling
	}
	infos, err := s.user.ListMailboxes(s.ctx)
	if err != nil {
		return s.fail("list mailboxes", err)
	}
	for _, info := range infos {
		if info.Name == sname {
			return nil
		}
	}
	return s.fail("subscribe", backend.ErrNoSuchMailbox)
}

// Status implements STATUS, including SIZE (RFC 8438), DELETED (RFC 9051)
// and APPENDLIMIT (RFC 7889).
func (s *session) Status(name string, opts *imap.StatusOptions) (*imap.StatusData, error) {
	defer s.timed("STATUS")()
	sname, err := s.srv.toStore(name)
	if err != nil {
		return nil, err
	}
	return s.status(sname, name, opts)
}

func (s *session) status(sname, name string, opts *imap.StatusOptions) (*imap.StatusData, error) {
	st, err := s.mailboxStatus(sname, opts.Size)
	if err != nil {
		return nil, s.fail("mailbox status", err)
	}
	data := &imap.StatusData{Mailbox: name}
	if opts.NumMessages {
		data.NumMessages = ptr(st.Messages)
	}
	if opts.NumRecent {
		data.NumRecent = ptr(uint32(0)) // \Recent is claimed only by a session that selects
	}
	if opts.UIDNext {
		data.UIDNext = imap.UID(st.UIDNext)
	}
	if opts.UIDValidity {
		data.UIDValidity = st.UIDValidity
	}
	if opts.NumUnseen {
		data.NumUnseen = ptr(st.Unseen)
	}
	if opts.NumDeleted {
		data.NumDeleted = ptr(st.Deleted)
	}
	if opts.Size {
		data.Size = ptr(st.Size)
	}
	if opts.AppendLimit {
		data.AppendLimit = ptr(uint32(s.srv.opts.AppendLimit))
	}
	return data, nil
}

// mailboxStatus uses the shared handle when the mailbox is open in this
// process, and a short-lived one otherwise. Without size it only syncs:
// sizes not measured yet would cost reading those files.
func (s *session) mailboxStatus(sname string, size bool) (backend.Status, error) {
	var mb backend.Mailbox
	if st := s.srv.lookupMailbox(s.username, sname); st != nil {
		defer s.srv.releaseMailbox(st)
		mb = st.mbox
	} else {
		var err error
		if mb, err = s.user.OpenMailbox(s.ctx, sname); err != nil {
			return backend.Status{}, err
		}
		defer mb.Close()
	}
	if size {
		return mb.Status(s.ctx)
	}
	snap, err := mb.Sync(s.ctx)
	if err != nil {
		return backend.Status{}, err
	}
	return snap.Counts(), nil
}

func ptr[T any](v T) *T { return &v }
