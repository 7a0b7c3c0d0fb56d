package maildir

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/backend/storetest"
)

// testLogger sends the store's log to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func newTestStore(t testing.TB, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s := New(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

func testAccount(t testing.TB) backend.Account {
	return backend.Account{Name: "alice", Maildir: filepath.Join(t.TempDir(), "alice", "Maildir"), UID: -1, GID: -1}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (backend.Store, backend.Account) {
		return newTestStore(t, Options{}), testAccount(t)
	})
}

// TestConformanceFsync runs the suite with fsync on and no special-use
// folders.
func TestConformanceFsync(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (backend.Store, backend.Account) {
		return newTestStore(t, Options{Fsync: true, SpecialUse: map[string]string{}}), testAccount(t)
	})
}

func TestMain(m *testing.M) {
	if role := os.Getenv(mpRoleEnv); role != "" {
		os.Exit(runMultiProcessRole(role))
	}
	os.Exit(m.Run())
}
