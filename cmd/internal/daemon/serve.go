package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// Main runs a daemon's run function with the process's arguments and
// exits 1, printing the error, if it fails.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Start parses a daemon's command line (ConfigFlag) and opens its
// environment (Open). The caller must Close the Env.
func Start(ctx context.Context, name string, args []string, stderr io.Writer) (*Env, error) {
	path, err := ConfigFlag(name, args, stderr)
	if err != nil {
		return nil, err
	}
	return Open(ctx, path, name, stderr)
}

// ConfigFlag parses a daemon's command line, which takes only --config, and
// returns the configuration file's path.
func ConfigFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/roost/roost.yaml", "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments %q (%s takes only --config)", fs.Args(), name)
	}
	return *path, nil
}

// Serving pairs a listener with the server method that serves it.
type Serving struct {
	Listener net.Listener
	Serve    func(net.Listener) error
}

// ServeAll serves every listener and returns when all have stopped. An
// error matching closed (or nil) is a normal stop; any other error calls
// stop, so that one failing listener ends the others instead of leaving a
// half-serving daemon.
func ServeAll(servings []Serving, closed error, stop func() error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(servings))
	for i, s := range servings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Serve(s.Listener)
			if err == nil || (closed != nil && errors.Is(err, closed)) {
				return
			}
			errs[i] = err
			stop()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Servings pairs each listener in lns with serve.
func Servings(lns []net.Listener, serve func(net.Listener) error) []Serving {
	s := make([]Serving, len(lns))
	for i, l := range lns {
		s[i] = Serving{Listener: l, Serve: serve}
	}
	return s
}
