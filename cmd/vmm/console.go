package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vmmgo/vmm/vmm"
	"github.com/vmmgo/vmm/vmm/termio"
)

// attachConsole connects stdin to the guest's serial port. When stdin is a
// terminal it goes into raw mode (restored on return, on the first signal and
// on a forced exit) and the escape sequences work: Ctrl-A x quits, Ctrl-A s
// dumps state, Ctrl-A h prints help.
func attachConsole(ctx context.Context, m *vmm.Machine, stderr io.Writer) (func(), error) {
	fd := int(os.Stdin.Fd())
	if termio.IsTerminal(fd) {
		restore, err := termio.MakeRaw(fd)
		if err != nil {
			return nil, fmt.Errorf("console: raw mode: %w", err)
		}
		var once sync.Once
		restoreTerminal = func() { once.Do(func() { _ = restore() }) }
	}
	var esc termio.EscapeFilter
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				fwd, actions := esc.Filter(buf[:n])
				for _, a := range actions {
					switch a {
					case termio.ActionQuit:
						m.Stop("console escape Ctrl-A x")
					case termio.ActionStats:
						fmt.Fprint(stderr, crlf(m.DumpState()))
					case termio.ActionHelp:
						fmt.Fprint(stderr, crlf(esc.Help()))
					}
				}
				if len(fwd) > 0 && m.SerialInputWait(ctx, fwd) != nil {
					return // the machine stopped
				}
			}
			if err != nil {
				return // EOF or closed: the guest keeps running without input
			}
		}
	}()
	return restoreTerminal, nil
}
