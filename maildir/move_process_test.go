package maildir

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// Processes moving the same messages at once, and a mover killed at
// random points: every message is still there exactly once.

const (
	moveRoleEnv = "ROOST_MAILDIR_MOVE_ROLE" // "race:<id>", "loop", "flag" or "efbig"
	moveRootEnv = "ROOST_MAILDIR_MOVE_ROOT"
	moveOutEnv  = "ROOST_MAILDIR_MOVE_OUT"
	moveN       = 40 // messages
	moveRounds  = 5  // times round moveCycle per racing process
)

// TestMoveHelperProcess is the child side of the tests below, run by
// re-executing the test binary; on its own it does nothing.
func TestMoveHelperProcess(t *testing.T) {
	role := os.Getenv(moveRoleEnv)
	if role == "" {
		t.Skip("child process of TestMoveMultiProcess, TestMoveKilled and TestMoveUidlistWriteFails")
	}
	out, err := os.Create(os.Getenv(moveOutEnv))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(out)
	defer func() {
		w.Flush()
		out.Close()
	}()
	ctx := context.Background()
	s := New(Options{LockTimeout: time.Minute})
	defer s.Close()
	u, err := s.Open(ctx, moveAccount(os.Getenv(moveRootEnv)))
	if err != nil {
		fmt.Fprintln(w, "ERR open:", err)
		t.Fatal(err)
	}
	defer u.Close()
	switch role {
	case "efbig":
		moveOverFileSizeLimit(t, w, u)
		return
	case "flag":
		stop := os.Getenv(moveOutEnv) + ".stop"
		n, err := toggleAnswered(ctx, u, func() bool {
			_, err := os.Stat(stop)
			return err == nil
		})
		if err != nil {
			fmt.Fprintln(w, "ERR flags:", err)
			t.Fatal(err)
		}
		fmt.Fprintln(w, "flag changes", n)
		return
	}
	id, racing := strings.CutPrefix(role, "race:")
	start, _ := strconv.Atoi(id)
	for r := 0; !racing || r < moveRounds; r++ {
		for i := range moveCycle {
			step := moveCycle[(i+start)%len(moveCycle)]
			lines, err := moveAll(ctx, u, step[0], step[1], moveN)
			if err != nil {
				fmt.Fprintln(w, "ERR", err)
				t.Fatal(err)
			}
			for _, l := range lines {
				fmt.Fprintln(w, l)
			}
			w.Flush() // the killer waits for the first moves
		}
	}
}

// toggleAnswered sets and clears \Answered on every message of every
// folder until stop says so: the movers' renames race with these. It
// returns how many flag changes it made.
func toggleAnswered(ctx context.Context, u backend.User, stop func() bool) (int, error) {
	changes := 0
	for !stop() {
		for _, f := range []string{"INBOX", "Trash", "A"} {
			mb, err := u.OpenMailbox(ctx, f)
			if err != nil {
				return changes, err
			}
			snap, err := mb.Sync(ctx)
			for _, op := range []backend.FlagOp{backend.FlagsAdd, backend.FlagsRemove} {
				if err != nil {
					break
				}
				var got []backend.Message
				got, err = mb.SetFlags(ctx, uids(snap), op, backend.FlagAnswered, nil)
				changes += len(got)
			}
			mb.Close()
			if err != nil {
				return changes, err
			}
		}
	}
	return changes, nil
}

func startMover(t *testing.T, role, root, out string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestMoveHelperProcess$")
	cmd.Env = append(os.Environ(), moveRoleEnv+"="+role, moveRootEnv+"="+root, moveOutEnv+"="+out)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestMoveMultiProcess(t *testing.T) {
	const procs = 3
	root, _ := moveFixture(t, moveN)
	work := t.TempDir()
	// A fourth process changes flags meanwhile: movers find renamed files.
	flagOut := filepath.Join(work, "flag")
	flagger := startMover(t, "flag", root, flagOut)
	var cmds []*exec.Cmd
	for i := 0; i < procs; i++ {
		cmds = append(cmds, startMover(t, "race:"+itoa(i), root, filepath.Join(work, itoa(i))))
	}
	var all []string
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("mover %d: %v", i, err)
		}
		data, err := os.ReadFile(filepath.Join(work, itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if strings.HasPrefix(l, "ERR") {
				t.Errorf("mover %d: %s", i, l)
			} else if l != "" {
				all = append(all, l)
			}
		}
	}
	writeFile(t, flagOut+".stop", "", time.Time{})
	if err := flagger.Wait(); err != nil {
		t.Errorf("flagger: %v", err)
	}
	flags, _ := os.ReadFile(flagOut)
	if !strings.HasPrefix(string(flags), "flag changes") {
		t.Errorf("flagger: %s", flags)
	}
	t.Logf("%d messages moved by %d processes; %s", len(all), procs, strings.TrimSpace(string(flags)))
	if len(all) < moveN*len(moveCycle) {
		t.Errorf("only %d moves done", len(all))
	}
	checkClaims(t, all)
	census(t, root, moveN, "INBOX", "A", "Trash")
	checkQuotaFile(t, root)
	for _, d := range []string{root, filepath.Join(root, ".A"), filepath.Join(root, ".Trash")} {
		if _, err := os.Stat(filepath.Join(d, uidlistName+".lock")); err == nil {
			t.Errorf("uidlist lock left in %s", d)
		}
	}
}

// TestMoveKilled kills a process moving messages round INBOX, Trash and A
// at random moments (kill -9): a fresh open always finds each message
// exactly once, with its flags, keywords and size, and UIDVALIDITY kept.
func TestMoveKilled(t *testing.T) {
	const kills = 12
	ctx := context.Background()
	root, _ := moveFixture(t, moveN)
	validity := func() map[string]uint32 {
		out := map[string]uint32{}
		for _, f := range []string{"INBOX", "A", "Trash"} {
			st, err := uidValidityOf(ctx, openMover(t, root), f)
			if err != nil {
				t.Fatal(err)
			}
			out[f] = st
		}
		return out
	}
	want := validity()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for k := 0; k < kills; k++ {
		out := filepath.Join(t.TempDir(), "out")
		cmd := startMover(t, "loop", root, out)
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			data, _ := os.ReadFile(out)
			t.Fatalf("mover ended before it was killed (%v): %s", err, data)
		}
		census(t, root, moveN, "INBOX", "A", "Trash")
		if got := validity(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("after kill %d UIDVALIDITY %v, want %v", k, got, want)
		}
		if t.Failed() {
			t.Fatalf("after kill %d", k)
		}
	}
}

func uidValidityOf(ctx context.Context, u backend.User, name string) (uint32, error) {
	mb, err := u.OpenMailbox(ctx, name)
	if err != nil {
		return 0, err
	}
	defer mb.Close()
	st, err := mb.Status(ctx)
	return st.UIDValidity, err
}

// moveOverFileSizeLimit moves INBOX to A with RLIMIT_FSIZE just above the
// size of A's uidlist: the files are renamed into A, then the append of
// their records fails (EFBIG, part of it written).
func moveOverFileSizeLimit(t *testing.T, w io.Writer, u backend.User) {
	ctx := context.Background()
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	snap, err := mb.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(u.(*user).root, ".A", uidlistName))
	if err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(fi.Size()) + 40
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	_, err = mb.Move(ctx, uids(snap), "A")
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	fmt.Fprintln(w, "move:", err)
}

// TestMoveUidlistWriteFails: the destination's uidlist cannot be written
// after the files were renamed into it; they go back to their exact
// names in the source, and nothing is lost or found twice.
func TestMoveUidlistWriteFails(t *testing.T) {
	root, u := moveFixture(t, 6)
	syncBox(t, u, "A") // A gets its uidlist
	before := listFiles(t, root)
	out := filepath.Join(t.TempDir(), "out")
	cmd := startMover(t, "efbig", root, out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "file too large") {
		t.Fatalf("child's move: %s; want it to fail writing the uidlist", data)
	}
	t.Logf("child: %s", data)
	if got := listFiles(t, root); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Errorf("INBOX files after the failed move %v, want %v", got, before)
	}
	if got := listFiles(t, filepath.Join(root, ".A")); len(got) != 0 {
		t.Errorf("A holds %v after the failed move", got)
	}
	census(t, root, 6, "INBOX", "A", "Trash")
	checkQuotaFile(t, root)
}
