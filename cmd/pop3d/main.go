// Command pop3d is Roost's POP3 server (RFC 1939 with STLS, SASL, UIDL and
// TOP) over the same Maildirs imapd serves. It only wires the configuration,
// the auth backend and the Maildir store into package pop3d; docs/pop3.md
// describes its behaviour and configuration keys.
package main

import (
	"context"
	"errors"
	"io"

	"github.com/roost-mail/roost/cmd/internal/daemon"
	"github.com/roost-mail/roost/pop3d"
)

func main() { daemon.Main("pop3d", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env, err := daemon.Start(ctx, "pop3d", args, stderr)
	if err != nil {
		return err
	}
	defer env.Close()
	cfg := env.Config
	if len(cfg.POP3.Listen)+len(cfg.POP3.ListenTLS) == 0 {
		return errors.New("pop3.listen and pop3.listen_tls are both empty: nothing to serve")
	}
	srv, err := pop3d.New(pop3d.Options{
		Store:              env.Store,
		Auth:               env.Auth,
		Logger:             env.Logger,
		Metrics:            env.Metrics,
		TLSConfig:          env.TLS.Config(),
		AllowPlaintextAuth: cfg.Security.AllowPlaintextAuth,
		Throttle:           env.Penalty,
		UIDLFormat:         cfg.POP3.UIDLFormat,
		ExpireDays:         cfg.POP3.ExpireDays,
		LoginDelay:         cfg.POP3.LoginDelay,
		MarkSeen:           cfg.POP3.MarkSeen,
		IdleTimeout:        cfg.POP3.IdleTimeout,
	})
	if err != nil {
		return err
	}
	lns, err := env.Listen(cfg.POP3.Listen, false)
	if err != nil {
		return err
	}
	tlsLns, err := env.Listen(cfg.POP3.ListenTLS, true)
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return err
	}
	return env.Run(ctx, func(context.Context) error {
		return daemon.ServeAll(daemon.Servings(append(lns, tlsLns...), srv.Serve), pop3d.ErrServerClosed, srv.Close)
	}, srv.Shutdown)
}
