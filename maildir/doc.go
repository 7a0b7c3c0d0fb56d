// Package maildir stores mail in Maildir++ directories, implementing
// backend.Store so that imapd, pop3d, lmtpd and roostctl share one storage
// layer with Postfix, Dovecot 2.3, Courier and mutt on the same disk.
//
// Formats (docs/storage.md has the details): the Maildir spec and
// Courier's Maildir++ (folders ".A.B" with maildirfolder, names in
// modified UTF-7 as RFC 3501 5.1.3 defines it, maildirsize quota);
// Dovecot's dovecot-uidlist v3, dovecot-keywords and subscriptions v1/v2,
// read and written as Dovecot does; Courier's courierimapuiddb, imported
// once. IMAP semantics come from RFC 3501 (UIDs, RENAME of INBOX), RFC
// 4315 (UIDs of appended and copied messages), RFC 6851 (MOVE) and RFC
// 6154 (special-use folders).
//
// Invariants:
//   - A message's UID never changes and is never reused in one
//     UIDVALIDITY; UIDVALIDITY changes only when the uidlist is lost or
//     unreadable beyond its header. Files removed out of band keep it.
//   - State files are replaced by rename, never rewritten in place; the
//     uidlist also grows by appended records (new messages only, as
//     Dovecot does), and readers ignore an unterminated last line, so
//     lock-free readers never act on a torn record; writers of the uidlist
//     and keywords hold the dovecot-uidlist.lock dotlock (NFS-safe).
//   - A message file becomes visible only complete (tmp/ then a
//     no-replace rename) and is never overwritten; a failed Append or Copy
//     leaves nothing; quota is checked before the file becomes visible.
//   - Message.Size is the exact length of the CRLF stream OpenMessage
//     returns, or -1 until measured: opening never reads a message file;
//     MessageSize and a background measurer read it once, and the size
//     is kept (",W=" or the uidlist's W).
//   - Damaged state files are logged and recovered from; no input makes
//     a message disappear.
//
// Implementation notes: handles of one mailbox in a process share one
// mboxState (its mutex orders this process's writers); the uidlist lock is
// always taken after that mutex, never the other way round, and no code
// holds two mailboxes' mutexes except RENAME of INBOX (source, then
// destination).
package maildir
