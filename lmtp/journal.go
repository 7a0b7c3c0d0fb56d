package lmtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mail/roost/backend"
)

// The delivery journal makes a retried delivery idempotent. Postfix
// resends a message whose 250 it never saw, and a process killed after a
// message became visible in the Maildir but before the reply went out
// would otherwise store it twice. Each delivery records "P" (pending)
// before it stores and "D" (done, with the UID) after; a retry of the same
// content for the same user and folder finds D and answers 250 at once,
// or finds only P and looks for the message among the folder's recent
// messages before storing it again.
//
// The journal is two small append-only files in the Maildir root (the
// current one and the one before it, rotated by rename), so several lmtpd
// and roostctl processes may write it at once: each line is one write(2)
// with O_APPEND, which local file systems do not interleave.
const (
	journalName    = "roost-deliveries"
	journalMaxSize = 64 << 10 // rotate past this: ~650 deliveries, plus as many in .old
	journalWindow  = 48 * time.Hour
	// journalSlack covers clock granularity between the P record and the
	// stored message's date.
	journalSlack = 2 * time.Second
)

type journal struct {
	root     string
	uid, gid int // owner of a new journal file when >= 0 (system layout)
}

type journalEntry struct {
	at     time.Time
	done   bool
	uid    backend.UID
	folder string
}

// deliveryKey identifies one message for one user and folder. CRs are
// left out of the hash so that the LF form an LDA receives and the CRLF
// form the store returns hash alike.
func deliveryKey(user, folder string, r io.Reader) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00", user, folder)
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		h.Write(bytes.ReplaceAll(buf[:n], []byte{'\r'}, nil))
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)[:16]), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// last returns the newest entry for key within the window, or nil.
func (j journal) last(key string) *journalEntry {
	cutoff := time.Now().Add(-journalWindow)
	var last *journalEntry
	for _, name := range []string{journalName + ".old", journalName} {
		f, err := os.Open(filepath.Join(j.root, name))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if e, k, ok := parseJournalLine(sc.Text()); ok && k == key && !e.at.Before(cutoff) {
				last = &e
			}
		}
		f.Close()
	}
	return last
}

// parseJournalLine parses "<unix> <key> P" or "<unix> <key> D <uid> <folder>".
func parseJournalLine(line string) (journalEntry, string, bool) {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 3 {
		return journalEntry{}, "", false
	}
	sec, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return journalEntry{}, "", false
	}
	e := journalEntry{at: time.Unix(sec, 0)}
	switch {
	case f[2] == "P" && len(f) == 3:
	case f[2] == "D" && len(f) == 5:
		uid, err := strconv.ParseUint(f[3], 10, 32)
		if err != nil {
			return journalEntry{}, "", false
		}
		e.done, e.uid, e.folder = true, backend.UID(uid), f[4]
	default:
		return journalEntry{}, "", false
	}
	return e, f[1], true
}

func (j journal) pending(key string) error {
	return j.append(fmt.Sprintf("%d %s P\n", time.Now().Unix(), key))
}

func (j journal) done(key string, uid backend.UID, folder string) error {
	return j.append(fmt.Sprintf("%d %s D %d %s\n", time.Now().Unix(), key, uid, folder))
}

func (j journal) append(line string) error {
	p := filepath.Join(j.root, journalName)
	if fi, err := os.Stat(p); err == nil && fi.Size() > journalMaxSize {
		// Losing a race here only loses old entries to the next rotation.
		os.Rename(p, p+".old")
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("delivery journal: %w", err)
	}
	if j.uid >= 0 {
		err = f.Chown(j.uid, j.gid)
	}
	if err == nil {
		_, err = f.WriteString(line)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("delivery journal: %w", err)
	}
	return nil
}

// findStored looks in mb for a message stored since p.at whose content
// has key: the delivery that was interrupted after storing.
func findStored(ctx context.Context, mb backend.Mailbox, user, folder, key string, since time.Time) (backend.UID, bool, error) {
	snap, err := mb.Sync(ctx)
	if err != nil {
		return 0, false, err
	}
	since = since.Add(-journalSlack)
	for i := len(snap.Messages()) - 1; i >= 0; i-- {
		m := snap.Messages()[i]
		if m.InternalDate.Before(since) {
			continue
		}
		rc, err := mb.OpenMessage(ctx, m.UID)
		if err != nil {
			continue // expunged meanwhile
		}
		k, err := deliveryKey(user, folder, rc)
		rc.Close()
		if err != nil {
			return 0, false, err
		}
		if k == key {
			return m.UID, true, nil
		}
	}
	return 0, false, nil
}
