// Package torture holds fault-injection and abuse tests that drive the real
// imapd, pop3d, lmtpd and roostctl binaries on loopback, with a passwd-file
// user, the way a campus host runs them:
//
//   - crash consistency: kill -9 during APPEND, COPY, MOVE, EXPUNGE,
//     DELE+QUIT and LMTP delivery, then check every acknowledged message,
//     the UIDs, dovecot-uidlist and maildirsize against the files;
//   - a full disk (a small tmpfs holding the mail root);
//   - state files corrupted while imapd runs;
//   - user isolation across IMAP, LMTP and roostctl (names, symlinks);
//   - resource bounds (100 MB of junk, huge literals) measured in VmRSS;
//   - a soak of mixed IMAP, POP3 and LMTP load with a final accounting.
//
// The package has no code of its own, only tests. `go test` runs short,
// bounded forms; `make torture` (go test -torture, or ROOST_TORTURE=1)
// runs the long forms: hundreds of kills and a 10-minute soak.
// docs/faults.md lists each fault, what Roost does and the test that
// shows it.
package torture
