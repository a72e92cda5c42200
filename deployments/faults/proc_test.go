// This file runs one process of the cluster on its test host: start, kill -9,
// pause, resume and graceful stop.

package faults

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is one program run on a test host. Start runs it (again after it
// exited); the harness owns it and Kill-s it at the end.
type Proc struct {
	Name string
	Host *Host
	bin  string
	args []string
	logs string // directory of its log files

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current run exited
	paused bool
	starts int
}

func newProc(name string, h *Host, logs, bin string, args ...string) *Proc {
	done := make(chan struct{})
	close(done)
	return &Proc{Name: name, Host: h, bin: bin, args: args, logs: logs, done: done}
}

// Start runs the program in its host's namespace (ip netns exec runs it in
// place, so the pid is the program's). It fails while a run is going on.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		return fmt.Errorf("faults: %s is running", p.Name)
	}
	p.starts++
	f, err := os.Create(filepath.Join(p.logs, fmt.Sprintf("%s.%d.log", p.Name, p.starts)))
	if err != nil {
		return err
	}
	args := append([]string{"netns", "exec", p.Host.NS, p.bin}, p.args...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group (a ^C to the test is handled by the test), and
	// killed should this process die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("faults: start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.paused = cmd, done, false
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	return nil
}

// Running reports whether a run is going on (paused or not).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Done is closed when the current run exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// PID is the pid of the current run, 0 when none.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

func (p *Proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return fmt.Errorf("faults: %s is not running", p.Name)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("faults: %s: %v: %w", p.Name, sig, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	return nil
}

// Kill sends SIGKILL (after SIGCONT, should it be paused) and waits for the exit.
func (p *Proc) Kill() error {
	p.signal(syscall.SIGCONT)
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.wait(10 * time.Second)
}

// Stop sends SIGTERM and waits up to grace for a graceful exit, then kills.
func (p *Proc) Stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := p.wait(grace); err == nil {
		return nil
	}
	p.Kill()
	return fmt.Errorf("faults: %s did not stop within %v of SIGTERM; killed", p.Name, grace)
}

// Pause stops the process (SIGSTOP); Resume continues it.
func (p *Proc) Pause() error  { return p.signal(syscall.SIGSTOP) }
func (p *Proc) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Proc) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.Done():
		return nil
	case <-t.C:
		return errors.New("faults: " + p.Name + " still running")
	}
}

// ExitCode is the exit code of the last run, -1 while running or killed.
func (p *Proc) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		return -1
	}
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// LogPath is the log file of the current (or last) run.
func (p *Proc) LogPath() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return filepath.Join(p.logs, fmt.Sprintf("%s.%d.log", p.Name, p.starts))
}
