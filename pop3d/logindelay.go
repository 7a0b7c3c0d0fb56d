package pop3d

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/roost-mail/roost/backend"
)

// LOGIN-DELAY (RFC 2449 section 6.5) needs the time of the user's last
// login, kept across restarts and hosts. backend.User offers no place for
// per-user protocol state, so it lives in a small file in the Maildir root,
// read and replaced only while the session holds the "pop3" maildrop lock.
// The name has no leading dot (Maildir++ would take it for a folder) and is
// ignored by Postfix, Dovecot and Courier.
const lastLoginFile = "roost-pop3-login"

// readLastLogin returns the time of the last recorded login, or the zero
// time if there is none.
func readLastLogin(maildir string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(maildir, lastLoginFile))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: not a Unix time; delete the file to reset it", filepath.Join(maildir, lastLoginFile))
	}
	return time.Unix(sec, 0), nil
}

// writeLastLogin records t atomically (write, then rename), owned by the
// account's uid/gid in the system-users layout.
func writeLastLogin(acct backend.Account, t time.Time) error {
	path := filepath.Join(acct.Maildir, lastLoginFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatInt(t.Unix(), 10)+"\n"), 0o600); err != nil {
		return err
	}
	if acct.UID >= 0 && os.Geteuid() == 0 {
		if err := os.Chown(tmp, acct.UID, acct.GID); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
