package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// genVersion changes whenever the generator's output changes, so a cached
// data set from an older harness is never reused.
const genVersion = 1

// DataSpec says what data set to generate. The same spec gives the same
// bytes, file names and modification times.
type DataSpec struct {
	Seed          uint64
	BigMessages   int // messages in user "big"'s INBOX
	Users         int // users u000…, each with smallFolders
	LargeMessages int // large MIME messages in user "large"'s INBOX
	LargeMaxKB    int // the largest of them is about this size
}

// Password is every generated user's password (with the user name appended,
// so a mix-up between users cannot go unnoticed).
func Password(user string) string { return "bench-" + user }

// smallFolders are each small user's folders and message counts. Giving
// every user the special-use folders means a server that creates them on
// first login finds them already there, as Dovecot does.
var smallFolders = []struct {
	Name  string // IMAP name with "/" as the hierarchy delimiter
	Count int
}{
	{"INBOX", 30}, {"Sent", 5}, {"Drafts", 1}, {"Trash", 2}, {"Junk", 2},
	{"Archive", 4}, {"Projects", 2}, {"Projects/2024", 2},
}

// benchDomain is the mail domain of the generated users (LMTP recipients
// are user@benchDomain, as Postfix sends them).
const benchDomain = "bench.test"

// UserName returns the name of small user i.
func UserName(i int) string { return fmt.Sprintf("u%03d", i) }

// UserList lists every user in the data set.
func (s DataSpec) UserList() []string {
	users := []string{"big", "large"}
	for i := 0; i < s.Users; i++ {
		users = append(users, UserName(i))
	}
	return users
}

func (s DataSpec) key() string {
	h := sha256.Sum256(fmt.Appendf(nil, "v%d %+v", genVersion, s))
	return hex.EncodeToString(h[:6])
}

// needle returns the word planted in one Subject of every needleEvery
// messages of the big INBOX, and how many carry it.
func (s DataSpec) needle() (string, int) {
	return "zebrafinch", (s.BigMessages + needleEvery - 1) / needleEvery
}

// maildirPath maps an IMAP folder name to its Maildir++ directory.
func maildirPath(root, user, folder string) string {
	dir := filepath.Join(root, user, "Maildir")
	if folder == "INBOX" {
		return dir
	}
	return filepath.Join(dir, "."+strings.ReplaceAll(folder, "/", "."))
}

// EnsureData returns the mail root of the data set for spec under cacheDir,
// generating it first unless an earlier run left it complete.
func EnsureData(cacheDir string, spec DataSpec, logf func(string, ...any)) (string, error) {
	dir := filepath.Join(cacheDir, "data-"+spec.key())
	root := filepath.Join(dir, "mail")
	marker := filepath.Join(dir, "complete")
	if _, err := os.Stat(marker); err == nil {
		logf("data: reusing %s", dir)
		return root, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("remove incomplete data set: %w", err)
	}
	start := time.Now()
	logf("data: generating %+v into %s", spec, dir)
	type job struct {
		user, folder string
		n            int
		large        bool
	}
	var jobs []job
	if spec.BigMessages > 0 {
		jobs = append(jobs, job{"big", "INBOX", spec.BigMessages, false})
	}
	if spec.LargeMessages > 0 {
		jobs = append(jobs, job{"large", "INBOX", spec.LargeMessages, true})
	}
	for i := 0; i < spec.Users; i++ {
		for _, f := range smallFolders {
			jobs = append(jobs, job{UserName(i), f.Name, f.Count, false})
		}
	}
	// The big INBOX takes most of the time; everything else shares a second
	// goroutine. Each mailbox has its own seeded generator, so the order of
	// work does not change the bytes.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, j := range jobs {
				if (k == 0) != (w == 0) {
					continue
				}
				if err := writeMailbox(root, spec, j.user, j.folder, j.n, j.large); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(marker, fmt.Appendf(nil, "%+v\n", spec), 0o644); err != nil {
		return "", err
	}
	logf("data: generated in %s", time.Since(start).Round(time.Millisecond))
	return root, nil
}

// writeMailbox writes n messages into one Maildir the way Postfix's
// virtual(8) does (LF line ends, <sec>.V<dev>I<ino>M<usec>.<host> names, no
// size fields), with flags already set on the ones a user has read.
func writeMailbox(root string, spec DataSpec, user, folder string, n int, large bool) error {
	dir := maildirPath(root, user, folder)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	g := newMsgGen(spec.Seed, user, folder)
	if folder != "INBOX" {
		marker := filepath.Join(dir, "maildirfolder")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(marker, g.start, g.start); err != nil {
			return err
		}
	}
	if user == "big" {
		g.needle, _ = spec.needle()
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s-%s-%06d", user, strings.ReplaceAll(folder, "/", "."), i)
		var m message
		if large {
			// Sizes spread evenly up to LargeMaxKB, at least 64 KB.
			size := max(64, spec.LargeMaxKB*(i+1)/n) * 1024
			m = g.large(i, id, size)
		} else {
			m = g.next(i, id, g.smallSize())
		}
		name := fmt.Sprintf("%d.Vfd01I%xM%d.bench", m.Date.Unix(), 0x10000+i, g.rng.IntN(1000000))
		path := filepath.Join(dir, "new", name)
		if m.Flags != "" {
			path = filepath.Join(dir, "cur", name+":2,"+m.Flags)
		}
		if err := os.WriteFile(path, m.Body, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(path, m.Date, m.Date); err != nil {
			return err
		}
	}
	return nil
}

// copyTree makes dst a copy of the Maildir tree src for one server: new
// directories (owned by uid:gid when uid >= 0, so a server that drops
// privileges can write them) and, with link, hard links to the message
// files, which Maildir never rewrites in place.
func copyTree(src, dst string, uid, gid int, link bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.Mkdir(target, 0o755); err != nil {
				return err
			}
			if uid >= 0 {
				return os.Lchown(target, uid, gid)
			}
			return nil
		}
		if link {
			if err := os.Link(path, target); err == nil {
				return nil
			}
		}
		return copyFile(path, target, uid, gid)
	})
}

func copyFile(src, dst string, uid, gid int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if uid >= 0 {
		if err := os.Lchown(dst, uid, gid); err != nil {
			return err
		}
	}
	return os.Chtimes(dst, st.ModTime(), st.ModTime())
}

// LinkTree makes dst a copy of the mail tree src with new directories and
// hard-linked message files, as each server gets in a run; Go benchmarks
// use it to serve a generated data set without writing into the cache.
func LinkTree(src, dst string) error { return copyTree(src, dst, -1, -1, true) }
