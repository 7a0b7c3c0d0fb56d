// Package pop3d is Roost's POP3 server, built on the standard library over
// the backend.Store interfaces, so it serves the same Maildirs imapd serves at
// the same moment.
//
// It implements RFC 1939 (USER/PASS, APOP when the authenticator can check
// digests, STAT LIST RETR DELE NOOP RSET TOP UIDL QUIT), RFC 2449 (CAPA,
// RESP-CODES, AUTH-RESP-CODE, PIPELINING, EXPIRE, LOGIN-DELAY,
// IMPLEMENTATION), RFC 2595 (STLS), RFC 5034 (SASL AUTH with PLAIN and
// LOGIN) and the RFC 3206 response codes [AUTH], [SYS/TEMP], [SYS/PERM],
// [IN-USE] and [LOGIN-DELAY].
//
// Implementation notes (invariants):
//   - The maildrop is a snapshot of INBOX taken at login: message n stays
//     message n for the whole session, and sizes come from the snapshot (the
//     store's cached CRLF sizes). Only a size the store has not measured yet
//     (Message.Size -1) is asked of Mailbox.MessageSize, at login, so that
//     the session's sizes are exact and fixed; a message expunged meanwhile
//     is left out of the maildrop. Messages
//     are numbered in POP3 order: those with a migrated position (the
//     dovecot-uidlist O field) first, then by UID, as Dovecot does.
//   - One POP3 session per user at a time, through the backend's "pop3" lock;
//     IMAP sessions are not blocked and see the deletions after QUIT.
//   - Deletions happen only in the UPDATE state, after QUIT: a dropped
//     connection deletes nothing. \Seen flags for fully sent RETRs are set
//     when the session ends, however it ends.
//   - Message bodies are streamed with dot-stuffing, as exactly the CRLF
//     size LIST gave (bare LFs become CRLF in the same pass when the store
//     hands out raw files); no message is ever held whole in memory, and a
//     file shorter than its size never gets the terminating ".".
//   - Command lines are read with a length limit (RFC 2449 section 4), never
//     with unbounded buffering.
//   - No store call is made while writing to the client, and passwords are
//     never logged.
package pop3d
