// Package quota is the quota policy every delivery path shares (lmtpd, the
// roostctl LDA, and any front end that stores mail): which limit applies to a
// user, whether a message of a given size still fits, and the warning mails
// that tell a user their mailbox is filling up.
//
// Usage itself comes from the store (backend.User.Quota, which reads the
// Maildir++ maildirsize file); this package only decides.
//
// Invariants:
//   - A user's limit is the one their auth entry gives, else Options.Default;
//     0 means unlimited, for bytes and for messages alike.
//   - A message fits if usage after storing it stays within the limit plus
//     GracePercent (Dovecot's quota_grace): the last message may push a user
//     over the limit, by at most the grace.
//   - Each crossing of a warning threshold (80, 90, 100 %) produces exactly
//     one warning mail, also when several processes deliver at once: the
//     highest threshold warned is kept in a state file in the Maildir root,
//     read and written only under the store's cross-process lock, and reset
//     when usage drops back below it (see warn.go).
package quota

import (
	"fmt"
	"log/slog"
	"slices"
	"text/template"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// Options configure a Policy. The zero value means: no default limit
// (unlimited), no grace, no warnings, temporary over-quota failures.
type Options struct {
	// Default is the storage limit in bytes for users whose auth entry sets
	// none (config quota.default); 0 = unlimited.
	Default int64
	// GracePercent lets a message through if usage after it stays within
	// the limit plus this percentage (config quota.grace_percent).
	GracePercent int
	// Warnings are usage percentages that each trigger one warning mail per
	// crossing (config quota.warnings). Order does not matter.
	Warnings []int
	// Template is the text/template source of the warning mail, headers
	// included ("" = the built-in text). See TemplateData for the fields.
	Template string
	// Permanent makes over-quota deliveries fail permanently (552 5.2.2,
	// a bounce) instead of temporarily (452 4.2.2, Postfix retries).
	Permanent bool
	// Hostname goes into the warning's From and Message-ID ("" = localhost).
	Hostname string
	// Logger receives one line per warning sent or reset; nil = discard.
	Logger *slog.Logger
}

// Policy is a validated quota policy. It is immutable and safe for
// concurrent use.
type Policy struct {
	opts     Options
	warnings []int // sorted ascending, unique, > 0
	tmpl     *template.Template
	log      *slog.Logger
}

// New checks opts and parses the warning template, so a broken template
// fails at start-up rather than at the first warning.
func New(opts Options) (*Policy, error) {
	if opts.Default < 0 {
		return nil, fmt.Errorf("quota: default limit %d is negative", opts.Default)
	}
	if opts.GracePercent < 0 {
		return nil, fmt.Errorf("quota: grace percent %d is negative", opts.GracePercent)
	}
	ws := slices.Clone(opts.Warnings)
	for _, w := range ws {
		if w <= 0 {
			return nil, fmt.Errorf("quota: warning threshold %d%% is not a positive percentage", w)
		}
	}
	slices.Sort(ws)
	ws = slices.Compact(ws)
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	tmpl, err := parseTemplate(opts.Template)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Policy{opts: opts, warnings: ws, tmpl: tmpl, log: log}, nil
}

// Permanent reports whether over-quota failures are permanent (552 5.2.2)
// rather than temporary (452 4.2.2).
func (p *Policy) Permanent() bool { return p.opts.Permanent }

// Limits returns the byte and message limits for a user: the auth entry's
// when it sets one (>= 0), else the default (bytes) or unlimited (messages).
func (p *Policy) Limits(id *auth.Identity) (bytes, messages int64) {
	bytes, messages = p.opts.Default, 0
	if id.QuotaBytes >= 0 {
		bytes = id.QuotaBytes
	}
	if id.QuotaMessages >= 0 {
		messages = id.QuotaMessages
	}
	return bytes, messages
}

// Account is the store account for a looked-up identity: its Maildir, its
// limits (Limits) and, in the system-users layout (mail.layout: system),
// the owner of new files. The identity must carry a Maildir path, as
// auth.WithDefaults guarantees.
func (p *Policy) Account(id *auth.Identity, systemLayout bool) (backend.Account, error) {
	if id.Maildir == "" {
		return backend.Account{}, fmt.Errorf("user %s has no Maildir path: wrap the auth backend with auth.WithDefaults", id.User)
	}
	acct := backend.Account{Name: id.User, Maildir: id.Maildir, UID: -1, GID: -1}
	acct.QuotaBytes, acct.QuotaMessages = p.Limits(id)
	if systemLayout {
		acct.UID, acct.GID = id.UID, id.GID
	}
	return acct, nil
}

// OverQuotaError says why a message does not fit. It wraps
// backend.ErrOverQuota.
type OverQuotaError struct {
	Quota backend.Quota // usage and limits at the time of the check
	Size  int64         // size of the refused message
}

func (e *OverQuotaError) Error() string {
	q := e.Quota
	if q.LimitMessages > 0 && q.UsedMessages+1 > q.LimitMessages {
		return fmt.Sprintf("%v: %d of %d messages used", backend.ErrOverQuota, q.UsedMessages, q.LimitMessages)
	}
	return fmt.Sprintf("%v: %d of %d bytes used, message of %d bytes does not fit",
		backend.ErrOverQuota, q.UsedBytes, q.LimitBytes, e.Size)
}

func (e *OverQuotaError) Unwrap() error { return backend.ErrOverQuota }

// Check reports whether a message of size bytes still fits into q. As
// Dovecot's quota_grace: a user under the limit may go over it with one
// last message, by at most GracePercent of the limit; a user at or over the
// limit gets nothing more. The same applies to the message count. It
// returns nil or an *OverQuotaError.
func (p *Policy) Check(q backend.Quota, size int64) error {
	if p.over(q.UsedBytes, size, q.LimitBytes) || p.over(q.UsedMessages, 1, q.LimitMessages) {
		return &OverQuotaError{Quota: q, Size: size}
	}
	return nil
}

func (p *Policy) over(used, add, limit int64) bool {
	if limit <= 0 || used+add <= limit {
		return false
	}
	return used >= limit || used+add > limit+limit*int64(p.opts.GracePercent)/100
}

// Percent is usage as a whole percentage of the byte limit (rounded down),
// or of the message limit if that is fuller; 0 when unlimited.
func Percent(q backend.Quota) int {
	pct := 0
	if q.LimitBytes > 0 {
		pct = int(q.UsedBytes * 100 / q.LimitBytes)
	}
	if q.LimitMessages > 0 {
		pct = max(pct, int(q.UsedMessages*100/q.LimitMessages))
	}
	return max(pct, 0)
}
