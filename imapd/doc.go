// Package imapd is Roost's IMAP server: IMAP4rev1 (RFC 3501) and IMAP4rev2
// (RFC 9051) on go-imap v2's imapserver, over a backend.Store and an
// auth.Authenticator. It adds what go-imap leaves to servers: SASL LOGIN
// (draft-murchison-sasl-login), a per-connection TLS policy with
// LOGINDISABLED (RFC 3501 6.2.3), live updates across processes, a MIME
// parser that locates body sections by octet offset (RFC 3501 6.4.5,
// RFC 3516 BINARY), a search evaluator (RFC 3501 6.4.4, RFC 4731 ESEARCH,
// RFC 5182 SEARCHRES), LIST-EXTENDED/LIST-STATUS/SPECIAL-USE (RFC 5258,
// 5819, 6154), UIDPLUS (RFC 4315), MOVE (RFC 6851), STATUS=SIZE (RFC 8438)
// and APPENDLIMIT (RFC 7889).
//
// Implementation notes (invariants):
//   - One mailboxState per open mailbox per process holds the store handle
//     and the newest immutable Snapshot. A session's view of message
//     numbers is a Snapshot pointer; updates are the difference between
//     its view and the current snapshot. EXPUNGE is never sent during
//     FETCH, STORE or SEARCH, and EXISTS is held back with it, so sequence
//     numbers never change under a command (RFC 3501 7.4.1).
//   - Message content is read only through Mailbox.OpenMessage, whose CRLF
//     form is exactly Message.Size octets (Mailbox.MessageSize's where the
//     store has not measured it yet and says -1); sections are byte ranges
//     of it, streamed, never loaded whole. FLAGS, UID and INTERNALDATE
//     never open a file; RFC822.SIZE, BODY[], BODY[TEXT], BINARY[] and
//     LARGER/SMALLER ask MessageSize only for an unmeasured message, once
//     per message per command, keeping the answer out of the snapshot.
//   - Content-derived data (ENVELOPE, MIME structure) is cached under the
//     user and the message's stable key; a key's content never changes.
//   - EXAMINE never changes a mailbox: no STORE, EXPUNGE, MOVE, and no
//     implicit \Seen.
//   - Store and auth errors become IMAP responses in errors.go only;
//     passwords are never logged.
//   - The package imports no store or auth implementation; cmd/imapd wires
//     them in.
package imapd
