// Command lmtpd is Roost's LMTP delivery daemon for Postfix
// (virtual_transport or mailbox_transport = lmtp:unix:roost/lmtp).
// It only wires the configuration, the auth backend and the Maildir store
// into package lmtp; docs/delivery.md describes the Postfix side.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/roost-mail/roost/cmd/internal/daemon"
	"github.com/roost-mail/roost/lmtp"
	"github.com/roost-mail/roost/quota"
)

func main() { daemon.Main("lmtpd", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	env, err := daemon.Start(ctx, "lmtpd", args, stderr)
	if err != nil {
		return err
	}
	defer env.Close()
	cfg := env.Config
	tmpl := ""
	if p := cfg.Quota.WarningTemplate; p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("quota.warning_template: %w", err)
		}
		tmpl = string(b)
	}
	hostname := cfg.LMTP.Hostname
	if hostname == "" {
		if hostname, err = os.Hostname(); err != nil {
			return fmt.Errorf("lmtp.hostname is empty and the system hostname is unknown: %w", err)
		}
	}
	policy, err := quota.New(quota.Options{
		Default: int64(cfg.Quota.Default), GracePercent: cfg.Quota.GracePercent,
		Warnings: cfg.Quota.Warnings, Template: tmpl, Permanent: cfg.Quota.Permanent,
		Hostname: hostname, Logger: env.Logger,
	})
	if err != nil {
		return err
	}
	if len(cfg.LMTP.Listen) == 0 {
		return errors.New("lmtp.listen is empty: nothing to serve")
	}
	srv, err := lmtp.New(lmtp.Options{
		Auth: env.Auth, Store: env.Store, Quota: policy,
		SystemLayout:       cfg.Mail.Layout == "system",
		Hostname:           hostname,
		RecipientDelimiter: cfg.LMTP.RecipientDelimiter,
		DetailFolders:      cfg.LMTP.DetailFolders,
		LocalDomains:       cfg.LMTP.LocalDomains,
		Logger:             env.Logger,
		Metrics:            env.Metrics,
	})
	if err != nil {
		return err
	}
	lns, err := env.Listen(cfg.LMTP.Listen, false)
	if err != nil {
		return err
	}
	return env.Run(ctx, func(context.Context) error {
		return daemon.ServeAll(daemon.Servings(lns, srv.Serve), nil, srv.Close)
	}, srv.Shutdown)
}
