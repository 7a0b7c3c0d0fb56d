// Package backend defines the storage interfaces that every Roost front end
// (imapd, pop3d, lmtp, roostctl) uses, with the value types and sentinel
// errors they share. It knows no protocol and imports only the standard
// library; package maildir implements it, and package storetest holds the
// conformance suite every implementation must pass.
//
// Invariants every Store must keep:
//   - A message's UID never changes and is never reused within one
//     UIDVALIDITY; UIDVALIDITY changes only when UIDs cannot be kept.
//   - A Snapshot is immutable; callers must not modify it or its slices.
//   - Message sizes are the exact octet counts of the CRLF form that
//     OpenMessage returns (RFC 3501 RFC822.SIZE, RFC 1939 LIST).
//   - An acknowledged Append is durable; a failed Append leaves nothing
//     visible.
//   - Mailbox names use "/" as the hierarchy delimiter and are UTF-8;
//     "INBOX" is matched case-insensitively and is always present.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors. Implementations wrap them with %w, adding context an admin
// can act on; callers test them with errors.Is.
var (
	ErrNoSuchMailbox    = errors.New("no such mailbox")
	ErrMailboxExists    = errors.New("mailbox already exists")
	ErrNoSuchMessage    = errors.New("no such message")
	ErrOverQuota        = errors.New("quota exceeded")
	ErrLocked           = errors.New("locked by another session")
	ErrInvalidName      = errors.New("invalid mailbox name")
	ErrHasChildren      = errors.New("mailbox has child mailboxes")
	ErrPermissionDenied = errors.New("operation not permitted on this mailbox")
	// ErrLimit: a configured resource limit (such as the number of
	// mailboxes an account may have) would be exceeded.
	ErrLimit = errors.New("limit reached")
)

// UID is a message's unique identifier within one UIDVALIDITY (RFC 3501 2.3.1.1).
type UID uint32

// Flags is the set of system flags of a message, stored in the Maildir file
// name (":2," info part).
type Flags uint8

// System flags. Keywords (user-defined flags) are kept separately as strings.
const (
	FlagSeen Flags = 1 << iota
	FlagAnswered
	FlagFlagged
	FlagDeleted
	FlagDraft
)

// flagNames maps each system flag to its IMAP name.
var flagNames = [...]struct {
	flag Flags
	name string
}{
	{FlagSeen, `\Seen`},
	{FlagAnswered, `\Answered`},
	{FlagFlagged, `\Flagged`},
	{FlagDeleted, `\Deleted`},
	{FlagDraft, `\Draft`},
}

// Names returns the IMAP names of the flags that are set, in a fixed order.
func (f Flags) Names() []string {
	var names []string
	for _, fn := range flagNames {
		if f&fn.flag != 0 {
			names = append(names, fn.name)
		}
	}
	return names
}

// ParseFlag returns the system flag with the given IMAP name (matched
// case-insensitively, as RFC 3501 requires), or false if name is not a
// system flag (it is then a keyword, or \Recent which is not stored).
func ParseFlag(name string) (Flags, bool) {
	for _, fn := range flagNames {
		if equalFold(fn.name, name) {
			return fn.flag, true
		}
	}
	return 0, false
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// Message describes one message in a Snapshot. It is a value: small, because
// a 100,000-message mailbox keeps one per message in memory.
type Message struct {
	UID UID
	// POP3Order is the position a migrated message had in its old POP3
	// listing (dovecot-uidlist's O field), or 0 if none was kept.
	POP3Order uint32
	// Key is stable for the life of the message and unique in the mailbox
	// (the Maildir base name, without the ":2," info part).
	Key   string
	Flags Flags
	// Keywords are user-defined flags such as "$Junk", sorted; nil if none.
	Keywords []string
	// InternalDate is the IMAP INTERNALDATE (the file's mtime in Maildir).
	InternalDate time.Time
	// Size is the exact size of the message with CRLF line endings, or -1
	// while the store has not measured it: a file another program wrote
	// without its size in the name is only read when someone needs the
	// size (Mailbox.MessageSize), so that opening a big mailbox for the
	// first time does not read every message. A store measures such
	// messages in the background too; later snapshots carry the sizes.
	Size int64
	// UIDL is a POP3 UIDL kept for this message (migrated from another
	// server), or "" if the UIDL is derived from UID and UIDVALIDITY.
	UIDL string
}

// HasKeyword reports whether the message carries keyword kw (case-insensitive).
func (m *Message) HasKeyword(kw string) bool { return containsFold(m.Keywords, kw) }

// Snapshot is a consistent, immutable view of a mailbox at one moment.
//
// A store may hand out a snapshot before its message list is decoded (a
// mailbox opened from a cache file): Summary and Len answer at once, and
// Messages waits for the list. IMAP SELECT answers from the summary, so
// that opening a 100,000-message mailbox in a new process does not wait
// for 100,000 messages to be laid out in memory.
type Snapshot struct {
	UIDValidity uint32
	UIDNext     UID
	// Changed is closed when the mailbox may have changed after this
	// snapshot was taken (by this process or any other writer, such as
	// Postfix). Callers waiting for news (IMAP IDLE) select on it and then
	// call Mailbox.Sync again.
	Changed <-chan struct{}

	sum   Summary
	msgs  []Message
	ready <-chan struct{} // closed once msgs is set; nil if set from the start
}

// Summary is what a Snapshot tells without its message list.
type Summary struct {
	Messages int
	Unseen   int
	Deleted  int
	// FirstUnseen is the index of the first message without \Seen, or -1.
	FirstUnseen int
	// FirstUID and LastUID are the lowest and highest UIDs, 0 if empty.
	FirstUID, LastUID UID
	// Keywords are the keywords at least one message carries, each once
	// (compared case-insensitively), in no particular order.
	Keywords []string
}

// NewSnapshot returns a snapshot of msgs, which must be sorted by
// ascending UID and must not be modified afterwards.
func NewSnapshot(uidValidity uint32, uidNext UID, msgs []Message, changed <-chan struct{}) *Snapshot {
	return &Snapshot{UIDValidity: uidValidity, UIDNext: uidNext, Changed: changed, sum: Summarize(msgs), msgs: msgs}
}

// NewPendingSnapshot returns a snapshot whose messages come later: fill
// must be called once, from any goroutine, with the messages sum
// describes; until then Messages waits.
func NewPendingSnapshot(uidValidity uint32, uidNext UID, sum Summary, changed <-chan struct{}) (snap *Snapshot, fill func([]Message)) {
	ready := make(chan struct{})
	snap = &Snapshot{UIDValidity: uidValidity, UIDNext: uidNext, Changed: changed, sum: sum, ready: ready}
	return snap, func(msgs []Message) {
		if len(msgs) != sum.Messages {
			panic(fmt.Sprintf("backend: pending snapshot of %d messages filled with %d", sum.Messages, len(msgs)))
		}
		snap.msgs = msgs
		close(ready)
	}
}

// Summarize computes the Summary of msgs.
func Summarize(msgs []Message) Summary {
	sum := Summary{Messages: len(msgs), FirstUnseen: -1}
	if len(msgs) > 0 {
		sum.FirstUID, sum.LastUID = msgs[0].UID, msgs[len(msgs)-1].UID
	}
	var last []string
	for i := range msgs {
		m := &msgs[i]
		if m.Flags&FlagSeen == 0 {
			if sum.Unseen == 0 {
				sum.FirstUnseen = i
			}
			sum.Unseen++
		}
		if m.Flags&FlagDeleted != 0 {
			sum.Deleted++
		}
		// Stores share one keyword slice among messages with the same
		// keywords: most messages repeat the previous one's.
		if len(m.Keywords) == 0 || len(last) == len(m.Keywords) && &last[0] == &m.Keywords[0] {
			continue
		}
		last = m.Keywords
		for _, k := range m.Keywords {
			if !containsFold(sum.Keywords, k) {
				sum.Keywords = append(sum.Keywords, k)
			}
		}
	}
	return sum
}

// containsFold reports whether list holds s, compared case-insensitively.
func containsFold(list []string, s string) bool {
	for _, k := range list {
		if equalFold(k, s) {
			return true
		}
	}
	return false
}

// Messages returns the messages, sorted by ascending UID; message
// sequence number n (1-based) is Messages()[n-1]. It waits if the list is
// still being decoded.
func (s *Snapshot) Messages() []Message {
	if s.ready != nil {
		<-s.ready
	}
	return s.msgs
}

// Len returns the number of messages without waiting for them.
func (s *Snapshot) Len() int { return s.sum.Messages }

// Summary returns the snapshot's summary without waiting for its messages.
func (s *Snapshot) Summary() Summary { return s.sum }

// Find returns the index in Messages() of the message with the given UID,
// or -1. It runs in O(log n).
func (s *Snapshot) Find(uid UID) int {
	msgs := s.Messages()
	lo, hi := 0, len(msgs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if msgs[mid].UID < uid {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(msgs) && msgs[lo].UID == uid {
		return lo
	}
	return -1
}

// Counts returns the figures of Status that the snapshot holds: all but
// Size, which may need messages measured (Mailbox.Status). IMAP STATUS
// without SIZE uses it, so that it never reads message files.
func (s *Snapshot) Counts() Status {
	return Status{Messages: uint32(s.sum.Messages), Unseen: uint32(s.sum.Unseen), Deleted: uint32(s.sum.Deleted),
		UIDNext: s.UIDNext, UIDValidity: s.UIDValidity}
}

// Status summarises a mailbox (IMAP STATUS, roostctl mailbox status).
type Status struct {
	Messages    uint32
	Unseen      uint32
	Deleted     uint32
	Size        int64 // sum of message sizes (RFC 8438 STATUS=SIZE)
	UIDNext     UID
	UIDValidity uint32
}

// Special-use attributes (RFC 6154).
const (
	SpecialUseSent    = `\Sent`
	SpecialUseDrafts  = `\Drafts`
	SpecialUseTrash   = `\Trash`
	SpecialUseJunk    = `\Junk`
	SpecialUseArchive = `\Archive`
)

// MailboxInfo describes one mailbox in a user's list.
type MailboxInfo struct {
	Name        string // "/"-delimited, UTF-8; "INBOX" for the root
	SpecialUse  string // one of the SpecialUse constants, or ""
	Subscribed  bool
	HasChildren bool
	// NoSelect marks a name that exists only as the parent of others.
	NoSelect bool
}

// Quota is a user's storage use and limits. A zero limit means unlimited.
type Quota struct {
	UsedBytes     int64
	UsedMessages  int64
	LimitBytes    int64
	LimitMessages int64
}

// Account identifies whose mail to open and with which limits. It is filled
// from the authentication backend's identity by the caller.
type Account struct {
	Name          string // canonical user name, for logs and lock owners
	Maildir       string // absolute path of the Maildir root (INBOX)
	QuotaBytes    int64  // 0 = unlimited
	QuotaMessages int64  // 0 = unlimited
	// UID and GID own newly created files when >= 0 (system-users layout);
	// -1 leaves ownership to the running process.
	UID, GID int
}

// Store opens users' mail.
type Store interface {
	// Open opens the mail of one account, creating the Maildir and the
	// configured special-use folders if they do not exist.
	Open(ctx context.Context, acct Account) (User, error)
}

// User is one user's set of mailboxes. It is safe for concurrent use.
type User interface {
	Name() string
	// ListMailboxes returns every mailbox, INBOX first, then by name.
	ListMailboxes(ctx context.Context) ([]MailboxInfo, error)
	// CreateMailbox creates name, and any missing parents. specialUse may be "".
	CreateMailbox(ctx context.Context, name, specialUse string) error
	// DeleteMailbox deletes name and its messages. It fails with
	// ErrHasChildren if name has children (RFC 3501 6.3.4 leaves the choice;
	// Roost keeps the children's mail safe) and refuses INBOX.
	DeleteMailbox(ctx context.Context, name string) error
	// RenameMailbox renames name and its children. Renaming INBOX moves its
	// messages to the new mailbox and leaves INBOX empty (RFC 3501 6.3.5).
	RenameMailbox(ctx context.Context, name, newName string) error
	SetSubscribed(ctx context.Context, name string, subscribed bool) error
	// OpenMailbox opens one mailbox. The caller must Close it.
	OpenMailbox(ctx context.Context, name string) (Mailbox, error)
	// Quota returns current usage (fast: from maildirsize) and the limits.
	Quota(ctx context.Context) (Quota, error)
	// Lock takes a named exclusive lock across processes, such as the POP3
	// maildrop lock; it fails at once with ErrLocked if someone holds it.
	Lock(ctx context.Context, name string) (release func() error, err error)
	Close() error
}

// AppendOptions are the optional attributes of a new message.
type AppendOptions struct {
	Flags    Flags
	Keywords []string
	// InternalDate defaults to the time of the append.
	InternalDate time.Time
	// IgnoreQuota skips the quota check (quota warnings written by the
	// server itself).
	IgnoreQuota bool
}

// AppendResult identifies a stored message (RFC 4315 APPENDUID).
type AppendResult struct {
	UIDValidity uint32
	UID         UID
	Size        int64 // CRLF size as stored
}

// CopyResult pairs source and destination UIDs (RFC 4315 COPYUID), in the
// same order.
type CopyResult struct {
	UIDValidity uint32 // of the destination
	Source      []UID
	Dest        []UID
}

// FlagOp says how SetFlags combines the given flags with the current ones.
type FlagOp int

const (
	FlagsAdd FlagOp = iota
	FlagsRemove
	FlagsReplace
)

// Mailbox is one open mailbox. It is safe for concurrent use; every handle
// sees changes made through any other handle or process after Sync.
type Mailbox interface {
	Name() string
	// Sync picks up changes on disk and returns the current snapshot. It is
	// cheap when nothing changed.
	Sync(ctx context.Context) (*Snapshot, error)
	Status(ctx context.Context) (Status, error)
	// OpenMessage streams the message in CRLF form, exactly Message.Size
	// octets (MessageSize's, where the snapshot has -1). It fails with
	// ErrNoSuchMessage if the message was expunged.
	OpenMessage(ctx context.Context, uid UID) (io.ReadCloser, error)
	// MessageSize returns the CRLF size of message uid, reading the file
	// if it was not measured yet (Message.Size -1). It fails with
	// ErrNoSuchMessage if the message was expunged.
	MessageSize(ctx context.Context, uid UID) (int64, error)
	// Append stores a new message read from r. It checks the quota after
	// writing to tmp/ and before the message becomes visible.
	Append(ctx context.Context, r io.Reader, opts AppendOptions) (AppendResult, error)
	// SetFlags changes system flags and keywords of the given messages and
	// returns their new state; UIDs no longer present are skipped.
	SetFlags(ctx context.Context, uids []UID, op FlagOp, flags Flags, keywords []string) ([]Message, error)
	// Expunge removes the given messages and returns the UIDs it removed.
	Expunge(ctx context.Context, uids []UID) ([]UID, error)
	// Copy copies messages to the mailbox dest, keeping flags and dates.
	Copy(ctx context.Context, uids []UID, dest string) (CopyResult, error)
	// Move moves messages to the mailbox dest (RFC 6851 semantics: the
	// source copies disappear only once the destination ones exist).
	Move(ctx context.Context, uids []UID, dest string) (CopyResult, error)
	Close() error
}
