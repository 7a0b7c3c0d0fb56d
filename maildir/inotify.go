package maildir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// An inotify instance on plain system calls, asking only for the events
// Roost needs: names appearing in or leaving new/ and cur/, and those
// directories going away. A Maildir file is never written in place
// (deliveries are renamed in), so content and attribute events tell
// nothing. Asking for them is costly too: IN_MODIFY and IN_ATTRIB are
// events on a directory's children, and adding a watch for child events
// makes the kernel walk every cached dentry of the directory to flag it —
// 11 ms on a 100,000-file cur/, against 8 µs without them. (fsnotify
// always asks for both and offers no way not to.)

const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// inotifyFD is a non-blocking inotify descriptor read through the
// runtime's poller, so that Close wakes a blocked reader (a plain
// blocking read(2) would not return when another thread closes the fd).
type inotifyFD struct {
	f  *os.File
	rc syscall.RawConn
}

func newInotifyFD() (*inotifyFD, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("inotify: %w", err)
	}
	return &inotifyFD{f: f, rc: rc}, nil
}

// add watches dir and returns its watch descriptor (the same one for two
// paths of one directory). Control keeps the fd from being closed, and
// its number reused, while the call runs.
func (in *inotifyFD) add(dir string) (int32, error) {
	var wd int
	var err error
	if cerr := in.rc.Control(func(fd uintptr) {
		for {
			if wd, err = unix.InotifyAddWatch(int(fd), dir, watchMask); err != unix.EINTR {
				return
			}
		}
	}); cerr != nil {
		return -1, fmt.Errorf("inotify_add_watch %s: %w", dir, cerr)
	}
	if err != nil {
		return -1, &fs.PathError{Op: "inotify_add_watch", Path: dir, Err: err}
	}
	return int32(wd), nil
}

// remove drops a watch. The kernel then queues IN_IGNORED for it.
func (in *inotifyFD) remove(wd int32) {
	_ = in.rc.Control(func(fd uintptr) {
		_, _ = unix.InotifyRmWatch(int(fd), uint32(wd))
	})
}

// read waits for events. After Close it returns an error matching
// os.ErrClosed. Interrupted reads (EINTR) are retried by the runtime.
func (in *inotifyFD) read(buf []byte) (int, error) { return in.f.Read(buf) }

func (in *inotifyFD) close() error { return in.f.Close() }

// inotifyBuf holds many events per read; one event needs at most
// unix.SizeofInotifyEvent + NAME_MAX + 1 bytes.
const inotifyBuf = 64 << 10

// parseInotify calls fn for each event in buf, as read(2) returns them
// from an inotify descriptor. It reports an error for a malformed buffer
// (a short or overlong record), which the kernel never produces.
func parseInotify(buf []byte, fn func(wd int32, mask uint32, name string)) error {
	for len(buf) > 0 {
		if len(buf) < unix.SizeofInotifyEvent {
			return errors.New("inotify: short event record")
		}
		wd := int32(binary.NativeEndian.Uint32(buf[0:]))
		mask := binary.NativeEndian.Uint32(buf[4:])
		n := uint64(binary.NativeEndian.Uint32(buf[12:]))
		if n > uint64(len(buf)-unix.SizeofInotifyEvent) {
			return errors.New("inotify: event name runs past the buffer")
		}
		name := buf[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+n]
		if i := bytes.IndexByte(name, 0); i >= 0 { // NUL-terminated, padded
			name = name[:i]
		}
		fn(wd, mask, string(name))
		buf = buf[unix.SizeofInotifyEvent+n:]
	}
	return nil
}
