package maildir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileID identifies a version of a file or directory cheaply: if any field
// differs, the content may have changed.
type fileID struct {
	ino   uint64
	size  int64
	mtime int64 // nanoseconds
	ok    bool
}

func statID(path string) fileID {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	return idOf(st)
}

func idOf(st fs.FileInfo) fileID {
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano(), ok: true}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.ino = sys.Ino
	}
	return id
}

// readNames lists a directory's entry names without stat'ing them.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// renameNoReplace renames old to new and fails with fs.ErrExist instead of
// replacing new: a message must never overwrite another one.
func renameNoReplace(oldPath, newPath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldPath, unix.AT_FDCWD, newPath, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EEXIST) {
		return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: fs.ErrExist}
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.ENOTSUP) {
		return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: err}
	}
	// File systems without RENAME_NOREPLACE (NFS, older kernels): a hard
	// link fails if the target exists; directories fall back to a check.
	if st, serr := os.Lstat(oldPath); serr == nil && st.IsDir() {
		if _, serr := os.Lstat(newPath); serr == nil {
			return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: fs.ErrExist}
		}
		return os.Rename(oldPath, newPath)
	}
	if lerr := os.Link(oldPath, newPath); lerr != nil {
		if errors.Is(lerr, fs.ErrExist) {
			return lerr
		}
		if _, serr := os.Lstat(newPath); serr == nil {
			return &os.LinkError{Op: "rename", Old: oldPath, New: newPath, Err: fs.ErrExist}
		}
		return os.Rename(oldPath, newPath)
	}
	return os.Remove(oldPath)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// owner says who owns created files; uid -1 leaves it to the process.
type owner struct{ uid, gid int }

func (o owner) chown(path string) error {
	if o.uid < 0 && o.gid < 0 {
		return nil
	}
	if err := os.Lchown(path, o.uid, o.gid); err != nil {
		return fmt.Errorf("chown %s to %d:%d: %w", path, o.uid, o.gid, err)
	}
	return nil
}

// writeAtomic replaces path with data through a temporary file in the same
// directory and a rename, so that readers never see a partial file.
func writeAtomic(path string, data []byte, doSync bool, own owner, g *nameGen) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp."+g.next())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil && doSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = own.chown(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if doSync {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

// mkdirOwned creates dir (not its parents) if missing.
func mkdirOwned(dir string, own owner) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return own.chown(dir)
}
