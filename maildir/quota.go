package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mail/roost/backend"
)

// maildirsize (Maildir++ quota, courier-libs README.maildirquota): line 1
// is the limit ("<n>S,<n>C"), every further line a "<bytes> <count>" delta.
// Usage is the sum of the deltas. The file is recalculated from the
// directories when it is missing, has grown to 5120 bytes or more, or says
// "over quota" while holding more than one delta line or being older than
// 15 minutes. Sizes are physical (",S=" or stat), as Courier and Dovecot
// count them.

const (
	maildirsizeName  = "maildirsize"
	maildirsizeMax   = 5120
	maildirsizeStale = 15 * time.Minute
	recalcRetries    = 2
)

type maildirsize struct {
	limitBytes, limitMsgs int64
	usedBytes, usedMsgs   int64
	lines                 int // delta lines
}

// parseMaildirsize parses the file; any malformed line is an error (the
// caller then recalculates, which is always safe).
func parseMaildirsize(data []byte) (maildirsize, error) {
	var ms maildirsize
	s := string(data)
	hdr, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return ms, errors.New("maildirsize has no complete header line")
	}
	for _, item := range strings.Split(strings.TrimSpace(hdr), ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		n, err := strconv.ParseInt(item[:len(item)-1], 10, 64)
		if err != nil || n < 0 {
			return ms, fmt.Errorf("maildirsize header item %q is not <number><S|C>", item)
		}
		switch item[len(item)-1] {
		case 'S':
			ms.limitBytes = n
		case 'C':
			ms.limitMsgs = n
		}
	}
	for len(rest) > 0 {
		var line string
		line, rest, ok = strings.Cut(rest, "\n")
		if !ok {
			return ms, errors.New("maildirsize ends in a partial line")
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 2 {
			return ms, fmt.Errorf("maildirsize line %q: want <bytes> <count>", line)
		}
		b, err1 := strconv.ParseInt(strings.TrimPrefix(f[0], "+"), 10, 64)
		c, err2 := strconv.ParseInt(strings.TrimPrefix(f[1], "+"), 10, 64)
		if err1 != nil || err2 != nil {
			return ms, fmt.Errorf("maildirsize line %q: bad number", line)
		}
		ms.usedBytes += b
		ms.usedMsgs += c
		ms.lines++
	}
	return ms, nil
}

func (ms maildirsize) header() string {
	var items []string
	if ms.limitBytes > 0 {
		items = append(items, strconv.FormatInt(ms.limitBytes, 10)+"S")
	}
	if ms.limitMsgs > 0 {
		items = append(items, strconv.FormatInt(ms.limitMsgs, 10)+"C")
	}
	if len(items) == 0 {
		return "0S"
	}
	return strings.Join(items, ",")
}

func (ms maildirsize) overQuota() bool {
	return (ms.limitBytes > 0 && ms.usedBytes > ms.limitBytes) ||
		(ms.limitMsgs > 0 && ms.usedMsgs > ms.limitMsgs)
}

func (ms maildirsize) quota() backend.Quota {
	return backend.Quota{UsedBytes: ms.usedBytes, UsedMessages: ms.usedMsgs, LimitBytes: ms.limitBytes, LimitMessages: ms.limitMsgs}
}

// quotaFS holds what quota functions need besides the path.
type quotaFS struct {
	opts Options
	own  owner
	g    *nameGen
	// limits go into a maildirsize counted from scratch when there was
	// none (nil: no limits in its header).
	limits *maildirsize
}

// read returns current usage, recalculating by the Maildir++ rules.
func (q quotaFS) read(root string) (maildirsize, error) {
	p := filepath.Join(root, maildirsizeName)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			_, after, err := q.recalc(root, q.limits)
			return after, err
		}
		return maildirsize{}, fmt.Errorf("read %s: %w", p, err)
	}
	buf := make([]byte, maildirsizeMax+1)
	n, _ := readFull(f, buf)
	st, serr := f.Stat()
	f.Close()
	if n > maildirsizeMax {
		_, after, err := q.recalc(root, nil)
		return after, err
	}
	ms, perr := parseMaildirsize(buf[:n])
	if perr != nil {
		if q.opts.Logger != nil {
			q.opts.Logger.Warn("maildirsize is damaged; recalculating it from the files", "file", p, "err", perr)
		}
		_, after, err := q.recalc(root, nil)
		return after, err
	}
	if ms.overQuota() && (ms.lines > 1 || serr != nil || time.Since(st.ModTime()) >= maildirsizeStale) {
		_, after, err := q.recalc(root, &ms)
		return after, err
	}
	return ms, nil
}

func readFull(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := f.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// recalc sums the folders and rewrites maildirsize. limits, if non-nil,
// supplies the header; otherwise the current header is kept.
func (q quotaFS) recalc(root string, limits *maildirsize) (before, after maildirsize, err error) {
	p := filepath.Join(root, maildirsizeName)
	if data, rerr := os.ReadFile(p); rerr == nil {
		before, _ = parseMaildirsize(data)
		if limits == nil {
			// Keep the header even if the deltas were damaged.
			hdr, _, _ := strings.Cut(string(data), "\n")
			lim, _ := parseMaildirsize([]byte(hdr + "\n"))
			limits = &lim
		}
	}
	if limits == nil {
		limits = &maildirsize{}
	}
	for attempt := 0; ; attempt++ {
		usage, dirIDs, err := q.sum(root)
		if err != nil {
			return before, after, err
		}
		after = maildirsize{limitBytes: limits.limitBytes, limitMsgs: limits.limitMsgs,
			usedBytes: usage.Bytes, usedMsgs: usage.Messages, lines: 1}
		content := after.header() + "\n" + strconv.FormatInt(usage.Bytes, 10) + " " + strconv.FormatInt(usage.Messages, 10) + "\n"
		if err := writeAtomic(p, []byte(content), q.opts.Fsync, q.own, q.g); err != nil {
			return before, after, err
		}
		if attempt >= recalcRetries || !q.changed(dirIDs) {
			return before, after, nil
		}
		// A delivery raced the count: count again (Maildir++ rule).
	}
}

func (q quotaFS) changed(ids map[string]fileID) bool {
	for d, id := range ids {
		if statID(d) != id {
			return true
		}
	}
	return false
}

// sum counts the messages and bytes of every counted folder.
func (q quotaFS) sum(root string) (FolderStat, map[string]fileID, error) {
	usages, ids, err := q.folderUsages(root)
	var total FolderStat
	for _, u := range usages {
		if u.Trash && !q.opts.IncludeTrash {
			continue
		}
		total.Messages += u.Messages
		total.Bytes += u.Bytes
	}
	return total, ids, err
}

// FolderStat is one folder's share of a Maildir's storage.
type FolderStat struct {
	Name     string // "INBOX" or the "/"-delimited folder name
	Messages int64
	Bytes    int64 // physical bytes, as maildirsize counts them
	Trash    bool  // the \Trash folder, not counted unless IncludeTrash
}

func (q quotaFS) folderUsages(root string) ([]FolderStat, map[string]fileID, error) {
	ids := map[string]fileID{}
	inbox, err := q.usageOf(root, ids)
	if err != nil {
		return nil, nil, err
	}
	inbox.Name = "INBOX"
	out := []FolderStat{inbox}
	s := New(q.opts)
	u := &user{s: s, root: root, log: s.log}
	dirs, err := u.folders()
	if err != nil {
		return nil, nil, err
	}
	for name, d := range dirs {
		fu, err := q.usageOf(filepath.Join(root, d), ids)
		if err != nil {
			return nil, nil, err
		}
		fu.Name = name
		fu.Trash = u.specialUse(name, d) == backend.SpecialUseTrash
		out = append(out, fu)
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].Name < out[1+j].Name })
	return out, ids, nil
}

func (q quotaFS) usageOf(dir string, ids map[string]fileID) (FolderStat, error) {
	var fu FolderStat
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(dir, sub)
		ids[d] = statID(d)
		names, err := readNames(d)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fu, fmt.Errorf("list %s: %w", d, err)
		}
		for _, n := range names {
			if !validFileName(n) {
				continue
			}
			key, _ := splitName(n)
			size, ok := sizeField(key, 'S')
			if !ok {
				st, err := os.Lstat(filepath.Join(d, n))
				if err != nil || !st.Mode().IsRegular() {
					continue
				}
				size = st.Size()
			}
			fu.Messages++
			fu.Bytes += size
		}
	}
	return fu, nil
}

// folderUsage counts one mailbox directory.
func folderUsage(dir string) (FolderStat, error) {
	return quotaFS{}.usageOf(dir, map[string]fileID{})
}

// appendDelta records a change in maildirsize. A missing file is left
// missing: the next read recalculates it. A damaged one is an error (the
// caller removes it), so that a delta never lands on garbage; the check
// reads at most maildirsizeMax bytes, as every reader does.
func appendDelta(root string, bytes, msgs int64) error {
	f, err := os.OpenFile(filepath.Join(root, maildirsizeName), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	buf := make([]byte, maildirsizeMax+1)
	if n, _ := readFull(f, buf); n <= maildirsizeMax {
		if _, perr := parseMaildirsize(buf[:n]); perr != nil {
			f.Close()
			return fmt.Errorf("maildirsize is damaged: %w", perr)
		}
	}
	_, err = f.WriteString(strconv.FormatInt(bytes, 10) + " " + strconv.FormatInt(msgs, 10) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadQuota returns the usage and limits recorded in the maildirsize file
// of the Maildir at path, without authentication. It is fast: it reads only
// maildirsize, and recalculates (rewriting the file) only when the
// Maildir++ rules say it is missing, too long or stale while over quota.
// opts.IncludeTrash decides whether such a recalculation counts Trash; pass
// the daemons' options so every tool agrees on the usage.
func ReadQuota(path string, opts Options) (backend.Quota, error) {
	ms, err := quotaFS{opts: opts, own: owner{-1, -1}, g: newNameGen()}.read(path)
	if err != nil {
		return backend.Quota{}, fmt.Errorf("maildir: quota of %s: %w", path, err)
	}
	return ms.quota(), nil
}

// RecalcQuota recounts every folder of the Maildir at path (opts says
// whether Trash counts) and rewrites maildirsize, keeping its limits. It
// returns the usage recorded before and the recounted usage.
func RecalcQuota(path string, opts Options) (before, after backend.Quota, err error) {
	b, a, err := quotaFS{opts: opts, own: owner{-1, -1}, g: newNameGen()}.recalc(path, nil)
	if err != nil {
		return b.quota(), a.quota(), fmt.Errorf("maildir: recalculate quota of %s: %w", path, err)
	}
	return b.quota(), a.quota(), nil
}

// FolderUsage returns the messages and physical bytes of each folder of
// the Maildir at path, INBOX first. It reads directories only.
func FolderUsage(path string) ([]FolderStat, error) {
	out, _, err := quotaFS{opts: Options{}}.folderUsages(path)
	if err != nil {
		return nil, fmt.Errorf("maildir: folder usage of %s: %w", path, err)
	}
	return out, nil
}

// SetQuotaLimit rewrites the maildirsize header of the Maildir at path to
// the given limits (0 = unlimited), keeping the usage (recalculated if the
// file is missing or damaged). Open calls it when an account's configured
// limits differ from the header.
func SetQuotaLimit(path string, bytes, messages int64) error {
	return quotaFS{opts: Options{}, own: owner{-1, -1}, g: newNameGen()}.setLimit(path, bytes, messages, true)
}

// setLimit writes the limits into the maildirsize header; a missing file
// is counted from the directories only if countMissing is set.
func (q quotaFS) setLimit(root string, bytes, messages int64, countMissing bool) error {
	lim := maildirsize{limitBytes: bytes, limitMsgs: messages}
	p := filepath.Join(root, maildirsizeName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) && !countMissing {
		return nil
	}
	if err == nil {
		ms, perr := parseMaildirsize(data)
		if perr == nil && len(data) < maildirsizeMax {
			if ms.limitBytes == bytes && ms.limitMsgs == messages {
				return nil
			}
			content := lim.header() + "\n" + strconv.FormatInt(ms.usedBytes, 10) + " " + strconv.FormatInt(ms.usedMsgs, 10) + "\n"
			return writeAtomic(p, []byte(content), q.opts.Fsync, q.own, q.g)
		}
		if perr != nil && q.opts.Logger != nil {
			q.opts.Logger.Warn("maildirsize is damaged; recalculating it from the files", "file", p, "err", perr)
		}
	}
	_, _, err = q.recalc(root, &lim)
	return err
}

func (u *user) quotaFS() quotaFS {
	return quotaFS{opts: u.s.opts, own: u.own, g: u.s.names,
		limits: &maildirsize{limitBytes: u.acct.QuotaBytes, limitMsgs: u.acct.QuotaMessages}}
}

// syncQuotaLimit keeps the maildirsize header in step with the account.
// A missing maildirsize is counted when first needed (a quota check or
// Quota), with the account's limits, not at login: counting a
// 100,000-message Maildir would delay the first login by 100 ms, as
// Dovecot does not.
func (u *user) syncQuotaLimit() error {
	return u.quotaFS().setLimit(u.root, u.acct.QuotaBytes, u.acct.QuotaMessages, false)
}

func (u *user) Quota(ctx context.Context) (backend.Quota, error) {
	ms, err := u.quotaFS().read(u.root)
	if err != nil {
		return backend.Quota{}, fmt.Errorf("maildir: quota of %s: %w", u.acct.Name, err)
	}
	q := ms.quota()
	q.LimitBytes, q.LimitMessages = u.acct.QuotaBytes, u.acct.QuotaMessages
	return q, nil
}

// checkQuota fails with ErrOverQuota if adding bytes and msgs would pass
// the account's limits plus the grace.
func (u *user) checkQuota(bytes, msgs int64) error {
	lb, lm := u.acct.QuotaBytes, u.acct.QuotaMessages
	if lb <= 0 && lm <= 0 {
		return nil
	}
	ms, err := u.quotaFS().read(u.root)
	if err != nil {
		return fmt.Errorf("maildir: check quota of %s: %w", u.acct.Name, err)
	}
	grace := int64(u.s.opts.GracePercent)
	if lb > 0 && !fits(ms.usedBytes, bytes, lb, grace) {
		return fmt.Errorf("maildir: %s uses %d of %d bytes, message of %d bytes refused: %w", u.acct.Name, ms.usedBytes, lb, bytes, backend.ErrOverQuota)
	}
	if lm > 0 && !fits(ms.usedMsgs, msgs, lm, grace) {
		return fmt.Errorf("maildir: %s has %d of %d messages: %w", u.acct.Name, ms.usedMsgs, lm, backend.ErrOverQuota)
	}
	return nil
}

// fits applies the limit with Dovecot's quota_grace rule: the message that
// crosses the limit may pass if the user was under it and the result stays
// within limit + grace%; once over, nothing more passes.
func fits(used, add, limit, gracePercent int64) bool {
	if used+add <= limit {
		return true
	}
	return used < limit && used+add <= limit+limit*gracePercent/100
}

func (u *user) quotaDelta(bytes, msgs int64) {
	if err := appendDelta(u.root, bytes, msgs); err != nil {
		u.log.Warn("cannot append to maildirsize; usage will be recounted", "err", err)
		os.Remove(filepath.Join(u.root, maildirsizeName))
	}
}
