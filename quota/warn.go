package quota

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/roost-mail/roost/backend"
)

// StateFile is the name of the file in the Maildir root that records the
// highest warning threshold already mailed. Maildir++ readers ignore it:
// folders start with a dot, and it is not a directory.
const StateFile = "roost-quota-warning"

// LockName is the store lock (backend.User.Lock) that serialises warning
// decisions among all processes delivering to one user.
const LockName = "quota-warning"

// lockWait bounds how long a delivery waits for another process's warning
// decision; past it the delivery goes on and a later one catches up.
const lockWait = 10 * time.Second

// TemplateData is what a warning template can use.
type TemplateData struct {
	User       string // canonical user name
	Threshold  int    // the threshold crossed, in percent
	Percent    int    // current usage in percent
	UsedMB     string // usage in MiB, one decimal ("201.3")
	LimitMB    string // limit in MiB, one decimal
	UsedBytes  int64
	LimitBytes int64
	Messages   int64
	Hostname   string
	Date       string // RFC 5322 date of the warning
	MessageID  string // without angle brackets
}

const defaultTemplate = `From: Mail System <postmaster@{{.Hostname}}>
To: {{.User}}
Subject: Your mailbox is {{.Percent}}% full
Date: {{.Date}}
Message-ID: <{{.MessageID}}>
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hello {{.User}},

your mailbox uses {{.UsedMB}} MB of its {{.LimitMB}} MB limit ({{.Percent}}%).
{{if ge .Threshold 100}}
It is full: new mail is being held back or returned to the senders until
you make room.
{{else}}
When it is full, new mail will be held back or returned to the senders.
{{end}}
To make room:
  - delete messages you no longer need, large attachments first
    (sort by size in your mail program);
  - empty the Trash and Junk folders, which count towards the limit;
  - save old mail to your own computer and delete it from the server.

If you need more space, contact the IT service desk.

This message was sent automatically; you will get another only if your
mailbox fills up further or drops below this level and fills up again.
`

func parseTemplate(src string) (*template.Template, error) {
	if src == "" {
		src = defaultTemplate
	}
	t, err := template.New("quota warning").Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, fmt.Errorf("quota: warning template: %w", err)
	}
	// Render once with sample data so a template that fails or does not
	// produce a message is caught at start-up.
	var buf bytes.Buffer
	sample := TemplateData{User: "user", Threshold: 90, Percent: 91, UsedMB: "227.5", LimitMB: "250.0",
		Hostname: "localhost", Date: time.Now().Format(time.RFC1123Z), MessageID: "sample@localhost"}
	if err := t.Execute(&buf, sample); err != nil {
		return nil, fmt.Errorf("quota: warning template: %w", err)
	}
	if _, err := mail.ReadMessage(&buf); err != nil {
		return nil, fmt.Errorf("quota: warning template does not produce a mail message (headers, blank line, body): %w", err)
	}
	return t, nil
}

// Warn runs after a message was stored for acct. If usage has crossed a
// warning threshold above the one last warned, it stores one warning mail in
// the user's INBOX (ignoring the quota) and logs it; if usage has dropped
// below the threshold last warned, it lowers the recorded level so the next
// crossing warns again. It returns the threshold warned, or 0.
//
// Concurrent deliveries, in this and other processes, agree through the
// store lock LockName; the common case (no change) takes no lock.
func (p *Policy) Warn(ctx context.Context, u backend.User, acct backend.Account) (int, error) {
	if len(p.warnings) == 0 {
		return 0, nil
	}
	q, err := u.Quota(ctx)
	if err != nil {
		return 0, fmt.Errorf("quota warning for %s: %w", acct.Name, err)
	}
	statePath := filepath.Join(acct.Maildir, StateFile)
	if p.level(q) == readState(statePath) {
		return 0, nil
	}
	release, err := lockWithRetry(ctx, u)
	if err != nil {
		return 0, fmt.Errorf("quota warning for %s: %w", acct.Name, err)
	}
	defer release()
	// Decide again under the lock: another delivery may have warned or
	// stored more mail since the first look.
	if q, err = u.Quota(ctx); err != nil {
		return 0, fmt.Errorf("quota warning for %s: %w", acct.Name, err)
	}
	level, prev := p.level(q), readState(statePath)
	switch {
	case level == prev:
		return 0, nil
	case level < prev:
		if err := writeState(statePath, level, acct); err != nil {
			return 0, err
		}
		p.log.Info("quota warning level reset", "user", acct.Name, "percent", Percent(q), "level", level)
		return 0, nil
	}
	msg, err := p.render(acct.Name, level, q)
	if err != nil {
		return 0, err
	}
	inbox, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		return 0, fmt.Errorf("quota warning for %s: open INBOX: %w", acct.Name, err)
	}
	defer inbox.Close()
	if _, err := inbox.Append(ctx, bytes.NewReader(msg), backend.AppendOptions{IgnoreQuota: true}); err != nil {
		return 0, fmt.Errorf("quota warning for %s: store warning: %w", acct.Name, err)
	}
	// The warning is stored before the level is recorded: a crash between
	// the two repeats a warning rather than losing it.
	if err := writeState(statePath, level, acct); err != nil {
		return level, err
	}
	p.log.Info("quota warning sent", "user", acct.Name, "threshold", level, "percent", Percent(q),
		"used_bytes", q.UsedBytes, "limit_bytes", q.LimitBytes)
	return level, nil
}

// level is the highest threshold that usage has reached, or 0.
func (p *Policy) level(q backend.Quota) int {
	pct, lvl := Percent(q), 0
	if q.LimitBytes == 0 && q.LimitMessages == 0 {
		return 0
	}
	for _, w := range p.warnings {
		if pct >= w {
			lvl = w
		}
	}
	return lvl
}

func (p *Policy) render(user string, level int, q backend.Quota) ([]byte, error) {
	id := make([]byte, 12)
	rand.Read(id)
	data := TemplateData{
		User: user, Threshold: level, Percent: Percent(q),
		UsedMB: mb(q.UsedBytes), LimitMB: mb(q.LimitBytes),
		UsedBytes: q.UsedBytes, LimitBytes: q.LimitBytes, Messages: q.UsedMessages,
		Hostname: p.opts.Hostname, Date: time.Now().Format(time.RFC1123Z),
		MessageID: "quota." + hex.EncodeToString(id) + "@" + p.opts.Hostname,
	}
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("quota warning for %s: template: %w", user, err)
	}
	// Stored messages use CRLF line ends, whatever the template file has.
	s := strings.ReplaceAll(buf.String(), "\r\n", "\n")
	return []byte(strings.ReplaceAll(s, "\n", "\r\n")), nil
}

func mb(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

func lockWithRetry(ctx context.Context, u backend.User) (func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		release, err := u.Lock(ctx, LockName)
		if !errors.Is(err, backend.ErrLocked) {
			return release, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("another process holds the %s lock: %w", LockName, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// readState returns the recorded level; a missing or unreadable file means
// nothing was warned yet (at worst one warning is repeated).
func readState(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// writeState replaces the state file atomically (write, fsync, rename).
func writeState(path string, level int, acct backend.Account) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("quota warning state: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%d\n", level)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil && acct.UID >= 0 {
		werr = os.Chown(tmp, acct.UID, acct.GID)
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("quota warning state %s: %w", path, werr)
	}
	return nil
}
