// Command imapd is Roost's IMAP server (IMAP4rev1 and IMAP4rev2) over the
// Maildirs that Postfix, lmtpd and pop3d share. It only wires the
// configuration, the auth backend and the Maildir store into package
// imapd; docs/imap.md describes its behaviour and configuration keys.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/roost-mail/roost/cmd/internal/daemon"
	"github.com/roost-mail/roost/imapd"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("imapd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/roost/roost.yaml", "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (imapd takes only --config)", fs.Args())
	}
	env, err := daemon.Open(ctx, *configPath, "imapd", stderr)
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
		return serveAll(srv, lns, tlsLns)
	}
	return env.Run(ctx, serve, srv.Shutdown)
}

// serveAll serves every listener and returns when all have stopped; a
// listener that fails stops the others.
func serveAll(srv *imapd.Server, lns, tlsLns []net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	start := func(l net.Listener, serve func(net.Listener) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serve(l); err != nil && !errors.Is(err, imapd.ErrServerClosed) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				srv.Close()
			}
		}()
	}
	for _, l := range lns {
		start(l, srv.Serve)
	}
	for _, l := range tlsLns {
		start(l, srv.ServeTLS)
	}
	wg.Wait()
	return errors.Join(errs...)
}
