package maildir

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// TestOpenRawMessage: the file as stored, LF line ends and all, found
// after its flags moved it; OpenMessage's CRLF form of it is
// MessageSize octets.
func TestOpenRawMessage(t *testing.T) {
	root := newMaildir(t)
	const body = "Subject: raw\n\n.dot\nno final newline"
	writeFile(t, filepath.Join(root, "new", "1700000000.M1P1.host"), body, time.Unix(1700000000, 0))
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	ctx := context.Background()
	uid := s.Messages()[0].UID
	if _, err := mb.SetFlags(ctx, []backend.UID{uid}, backend.FlagsAdd, backend.FlagSeen, nil); err != nil {
		t.Fatal(err)
	}
	raw, ok := mb.(interface {
		OpenRawMessage(context.Context, backend.UID) (io.ReadCloser, error)
	})
	if !ok {
		t.Fatal("the maildir mailbox does not offer OpenRawMessage")
	}
	r, err := raw.OpenRawMessage(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != body {
		t.Errorf("raw: %q %v, want %q", got, err, body)
	}
	if want := int64(len(naiveCRLF([]byte(body)))); mustSize(t, mb, uid) != want {
		t.Errorf("size %d, want %d", mustSize(t, mb, uid), want)
	}
	if _, err := raw.OpenRawMessage(ctx, uid+1); !errors.Is(err, backend.ErrNoSuchMessage) {
		t.Errorf("unknown UID: %v, want ErrNoSuchMessage", err)
	}
}
