// Package bench measures Roost against Dovecot side by side, on copies of
// the same Maildirs, in the same run, alternating between the two servers.
//
// It generates a seeded, reproducible data set (Postfix-style LF files
// written straight into Maildir++ trees), starts a private Dovecot and
// Roost's daemons on loopback ports with configurations it writes, drives
// five workloads with real clients (go-imap's imapclient, a small POP3
// client, go-smtp's LMTP client) and writes a Markdown table of medians with
// the Roost/Dovecot ratio per row.
//
// Implementation notes:
//   - Every workload checks the answers it gets (counts, sizes, the
//     X-Bench-Id header each generated message carries, flags it set); a
//     wrong answer is reported next to the numbers, never hidden by them.
//   - Each server gets its own copy of the data for every repetition, so no
//     run sees the other server's index files or the previous run's changes.
//     Copies hard-link the message files: Maildir never rewrites a message
//     file in place, and the directories are new.
//   - Every process the harness starts runs in its own process group and is
//     killed with it, on success and on failure.
//   - These are figures, not tests: nothing here asserts a time. TestSmoke
//     runs the whole harness on tiny data to keep it working.
package bench
