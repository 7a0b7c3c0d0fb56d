// Command imapd is Roost's IMAP server (IMAP4rev1 and IMAP4rev2) over the
// Maildirs that Postfix, lmtpd and pop3d share. It only wires the
// configuration, the auth backend and the Maildir store into package
// imapd; docs/imap.md describes its behaviour and configuration keys.
package main

import (
	"context"
	"errors"
	"io"

	"github.com/roost-mail/roost/cmd/internal/daemon"
	"github.com/roost-mail/roost/imapd"
)

func main() { daemon.Main("imapd", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env, err := daemon.Start(ctx, "imapd", args, stderr)
	if err != nil {
		return err
	}
	defer env.Close()
	cfg := env.Config
	if len(cfg.IMAP.Listen)+len(cfg.IMAP.ListenTLS) == 0 {
		return errors.New("imap.listen and imap.listen_tls are both empty: nothing to serve")
	}
	srv, err := imapd.New(imapd.Options{
		Store:                env.Store,
		Auth:                 env.Auth,
		Logger:               env.Logger,
		Metrics:              env.Metrics,
		Throttle:             env.Penalty,
		TLSConfig:            env.TLS.Config(),
		AllowPlaintextAuth:   cfg.Security.AllowPlaintextAuth,
		Delimiter:            rune(cfg.IMAP.Delimiter[0]),
		NamespacePrefix:      cfg.IMAP.NamespacePrefix,
		AppendLimit:          int64(cfg.IMAP.AppendLimit),
		IdleTimeout:          cfg.IMAP.IdleTimeout,
		MaxUserIPConnections: cfg.IMAP.MaxUserIPConnections,
	})
	if err != nil {
		return err
	}
	lns, err := env.Listen(cfg.IMAP.Listen, false)
	if err != nil {
		return err
	}
	// imapd does the TLS handshake itself, to count traffic below TLS.
	tlsLns, err := env.ListenTLSRaw(cfg.IMAP.ListenTLS)
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return err
	}
	serve := func(context.Context) error {
		return daemon.ServeAll(append(daemon.Servings(lns, srv.Serve), daemon.Servings(tlsLns, srv.ServeTLS)...), imapd.ErrServerClosed, srv.Close)
	}
	return env.Run(ctx, serve, srv.Shutdown)
}
