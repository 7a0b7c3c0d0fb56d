package storetest_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/backend/storetest"
)

type rawOpener interface {
	OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error)
}

// stubStore opens users whose mailboxes have OpenRawMessage if raw is set;
// every other method is nil and panics if called.
type stubStore struct {
	backend.Store
	raw bool
}

type stubUser struct {
	backend.User
	raw bool
}

type stubMailbox struct{ backend.Mailbox }

type stubRawMailbox struct{ backend.Mailbox }

func (stubRawMailbox) OpenRawMessage(ctx context.Context, uid backend.UID) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("raw\n")), nil
}

func (s stubStore) Open(context.Context, backend.Account) (backend.User, error) {
	return stubUser{raw: s.raw}, nil
}

func (u stubUser) OpenMailbox(context.Context, string) (backend.Mailbox, error) {
	if u.raw {
		return stubRawMailbox{}, nil
	}
	return stubMailbox{}, nil
}

// TestSizeHiderRawMessage: a SizeHider's mailbox has OpenRawMessage
// exactly when the wrapped one has, and passes it on.
func TestSizeHiderRawMessage(t *testing.T) {
	ctx := context.Background()
	for _, raw := range []bool{false, true} {
		h := &storetest.SizeHider{Store: stubStore{raw: raw}}
		u, err := h.Open(ctx, backend.Account{})
		if err != nil {
			t.Fatal(err)
		}
		mb, err := u.OpenMailbox(ctx, "INBOX")
		if err != nil {
			t.Fatal(err)
		}
		ro, ok := mb.(rawOpener)
		if ok != raw {
			t.Fatalf("wrapped mailbox with OpenRawMessage %v: wrapper has it %v", raw, ok)
		}
		if !ok {
			continue
		}
		r, err := ro.OpenRawMessage(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		if string(b) != "raw\n" {
			t.Errorf("OpenRawMessage read %q, want the wrapped mailbox's %q", b, "raw\n")
		}
	}
}
