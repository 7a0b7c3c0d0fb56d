package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a server process the harness started in its own process
// group; stop kills the whole group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

// startProcess runs name with args, output appended to logPath. The child
// gets SIGKILL if the harness dies, so nothing outlives a crashed run.
func startProcess(logPath, name string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after a grace
// period, and waits for the leader.
func (p *process) stop() {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that outlived the leader are still in the group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procGroup is the set of processes one server runs; the memory sampler
// reads it while the harness restarts the server.
type procGroup struct {
	mu    sync.Mutex
	procs []*process
}

func (g *procGroup) add(p *process) {
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
}

// pids lists every process of the group and their descendants.
func (g *procGroup) pids() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var pids []int
	for _, p := range g.procs {
		pids = append(pids, descendants(p.cmd.Process.Pid)...)
	}
	return pids
}

// stop stops every process; the group can be reused.
func (g *procGroup) stop() {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitListening waits until every address accepts connections, or the
// process exits, or ctx ends.
func waitListening(ctx context.Context, p *process, logPath string, addrs ...string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if p.exited() {
				return fmt.Errorf("server exited before listening on %s: %v\n%s", a, p.err, tail(logPath, 20))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on %s after 20s\n%s", a, tail(logPath, 20))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// tail returns the last n lines of a log file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n  " + strings.Join(lines, "\n  ")
}

// descendants returns pid and every process below it.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The command name is in parentheses and may contain spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// memKB sums a field ("VmRSS" from status, "Pss" from smaps_rollup) over
// pids, in KiB. Processes that vanished in between count as zero.
func memKB(pids []int, file, field string) int64 {
	var sum int64
	for _, pid := range pids {
		f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), file))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				sum += n
				break
			}
		}
		f.Close()
	}
	return sum
}

func rssKB(pids []int) int64 { return memKB(pids, "status", "VmRSS") }
func pssKB(pids []int) int64 { return memKB(pids, "smaps_rollup", "Pss") }

// memSampler records the peak of a server's summed RSS while it runs.
type memSampler struct {
	mu   sync.Mutex
	peak int64
	stop chan struct{}
	wg   sync.WaitGroup
}

func sampleMemory(pids func() []int, every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.record(rssKB(pids()))
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) record(kb int64) {
	m.mu.Lock()
	m.peak = max(m.peak, kb)
	m.mu.Unlock()
}

// Stop ends sampling and returns the peak in KiB.
func (m *memSampler) Stop() int64 {
	close(m.stop)
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

var errMissing = errors.New("not installed")
