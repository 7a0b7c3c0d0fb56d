package imapd

import (
	"errors"
	"io"
	"reflect"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"github.com/roost-mail/roost/backend"
)

// splitFlags separates system flags from keywords. \Recent cannot be
// stored (RFC 3501 2.3.2) and is ignored.
func splitFlags(flags []imap.Flag) (backend.Flags, []string) {
	var sys backend.Flags
	var kws []string
	for _, f := range flags {
		if strings.HasPrefix(string(f), `\`) {
			if bf, ok := backend.ParseFlag(string(f)); ok {
				sys |= bf
			}
			continue
		}
		kws = append(kws, string(f))
	}
	return sys, kws
}

// Store implements STORE and UID STORE, with .SILENT and keywords.
func (s *session) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, _ *imap.StoreOptions) error {
	defer s.timed("STORE")()
	if s.sel.readOnly {
		return errReadOnly
	}
	idx, err := s.resolve(numSet)
	if err != nil {
		return err
	}
	uids := s.uidsOf(idx)
	if len(uids) == 0 {
		return nil
	}
	op := map[imap.StoreFlagsOp]backend.FlagOp{
		imap.StoreFlagsSet: backend.FlagsReplace, imap.StoreFlagsAdd: backend.FlagsAdd, imap.StoreFlagsDel: backend.FlagsRemove,
	}[flags.Op]
	sys, kws := splitFlags(flags.Flags)
	msgs, err := s.sel.st.mbox.SetFlags(s.ctx, uids, op, sys, kws)
	if err != nil {
		return s.fail("store flags", err)
	}
	_, isUID := numSet.(imap.UIDSet)
	for i := range msgs {
		m := &msgs[i]
		k := s.sel.view.Find(m.UID)
		if k < 0 {
			continue
		}
		s.tell(m)
		if flags.Silent {
			continue
		}
		rw := w.CreateMessage(uint32(k + 1))
		if isUID {
			rw.WriteUID(imap.UID(m.UID))
		}
		rw.WriteFlags(s.flagsOf(m))
		if err := rw.Close(); err != nil {
			return err
		}
	}
	if _, err := s.sel.st.forceSync(s.ctx); err != nil {
		return s.fail("re-read mailbox", err)
	}
	return nil
}

func (s *session) uidsOf(idx []int) []backend.UID {
	uids := make([]backend.UID, len(idx))
	for i, k := range idx {
		uids[i] = s.sel.view.Messages()[k].UID
	}
	return uids
}

// Copy implements COPY and UID COPY with UIDPLUS COPYUID (RFC 4315).
func (s *session) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	return s.copyOrMove(numSet, dest, false)
}

// Move implements MOVE and UID MOVE (RFC 6851). The EXPUNGE responses are
// sent by the poll that follows, from the store's new snapshot.
func (s *session) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if s.sel.readOnly {
		return errReadOnly
	}
	data, err := s.copyOrMove(numSet, dest, true)
	if err != nil || data == nil {
		return err
	}
	return w.WriteCopyData(data)
}

func (s *session) copyOrMove(numSet imap.NumSet, dest string, move bool) (*imap.CopyData, error) {
	defer s.timed(map[bool]string{false: "COPY", true: "MOVE"}[move])()
	idx, err := s.resolve(numSet)
	if err != nil {
		return nil, err
	}
	to, err := s.srv.toStore(dest)
	if err != nil {
		return nil, err
	}
	uids := s.uidsOf(idx)
	if len(uids) == 0 {
		return nil, nil
	}
	var res backend.CopyResult
	if move {
		res, err = s.sel.st.mbox.Move(s.ctx, uids, to)
	} else {
		res, err = s.sel.st.mbox.Copy(s.ctx, uids, to)
	}
	if errors.Is(err, backend.ErrNoSuchMailbox) {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate,
			Text: "Destination mailbox does not exist"}
	}
	if err != nil {
		return nil, s.fail("copy messages", err)
	}
	s.refresh(to, move)
	if len(res.Dest) == 0 {
		return nil, nil
	}
	data := &imap.CopyData{UIDValidity: res.UIDValidity}
	for i := range res.Source {
		data.SourceUIDs.AddNum(imap.UID(res.Source[i]))
		data.DestUIDs.AddNum(imap.UID(res.Dest[i]))
	}
	return data, nil
}

// refresh makes this process's sessions that have mailbox name (and, when
// sourceChanged, the selected mailbox) open see a change at once, whatever
// the store's notification delay.
func (s *session) refresh(name string, sourceChanged bool) {
	if st := s.srv.lookupMailbox(s.username, name); st != nil {
		st.forceSync(s.ctx) //nolint:errcheck // the next poll reports a failure
		s.srv.releaseMailbox(st)
	}
	if sourceChanged && s.sel != nil && s.sel.st.key != s.username+"\x00"+name {
		s.sel.st.forceSync(s.ctx) //nolint:errcheck // as above
	}
}

// Expunge implements EXPUNGE, UID EXPUNGE (RFC 4315) and the expunge of
// CLOSE. The EXPUNGE responses come from the poll that follows.
func (s *session) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	defer s.timed("EXPUNGE")()
	if s.sel.readOnly {
		if isCloseWriter(w) {
			return nil // CLOSE after EXAMINE removes nothing and is no error (RFC 3501 6.4.2)
		}
		return errReadOnly
	}
	cur, err := s.sel.st.sync(s.ctx)
	if err != nil {
		return s.fail("read mailbox", err)
	}
	var del []backend.UID
	for i := range s.sel.view.Messages() {
		uid := s.sel.view.Messages()[i].UID
		if uids != nil && !uids.Contains(imap.UID(uid)) {
			continue
		}
		if k := cur.Find(uid); k >= 0 && cur.Messages()[k].Flags&backend.FlagDeleted != 0 {
			del = append(del, uid)
		}
	}
	if len(del) == 0 {
		return nil
	}
	if _, err := s.sel.st.mbox.Expunge(s.ctx, del); err != nil {
		return s.fail("expunge", err)
	}
	if _, err := s.sel.st.forceSync(s.ctx); err != nil {
		return s.fail("re-read mailbox", err)
	}
	return nil
}

// isCloseWriter tells CLOSE from EXPUNGE: go-imap passes CLOSE a writer
// with no connection, and offers no other way to tell them apart.
func isCloseWriter(w *imapserver.ExpungeWriter) bool {
	v := reflect.ValueOf(w).Elem().FieldByName("conn")
	return v.IsValid() && v.IsNil()
}

// Append implements APPEND with flags, keywords and internal date; the
// store checks the quota before the message becomes visible.
func (s *session) Append(mailbox string, r imap.LiteralReader, opts *imap.AppendOptions) (*imap.AppendData, error) {
	defer s.timed("APPEND")()
	done := s.cc.streamLiteral()
	defer func() {
		// What the store did not read (a refused APPEND) is skipped here,
		// still outside the command size limit.
		io.Copy(io.Discard, r) //nolint:errcheck // go-imap sees the same error on its next read
		done()
	}()
	name, err := s.srv.toStore(mailbox)
	if err != nil {
		return nil, err
	}
	sys, kws := splitFlags(opts.Flags)
	aopts := backend.AppendOptions{Flags: sys, Keywords: kws, InternalDate: opts.Time}
	var res backend.AppendResult
	if st := s.srv.lookupMailbox(s.username, name); st != nil {
		res, err = st.mbox.Append(s.ctx, r, aopts)
		s.srv.releaseMailbox(st)
	} else {
		var mb backend.Mailbox
		if mb, err = s.user.OpenMailbox(s.ctx, name); err == nil {
			res, err = mb.Append(s.ctx, r, aopts)
			mb.Close()
		}
	}
	if errors.Is(err, backend.ErrNoSuchMailbox) {
		s.srv.opts.Metrics.Delivery("fail")
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeTryCreate,
			Text: "Mailbox does not exist"}
	}
	if err != nil {
		s.srv.opts.Metrics.Delivery("fail")
		return nil, s.fail("append", err)
	}
	s.srv.opts.Metrics.Delivery("ok")
	s.refresh(name, false)
	return &imap.AppendData{UID: imap.UID(res.UID), UIDValidity: res.UIDValidity}, nil
}
