package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vmmgo/vmm/internal/termio"
	"github.com/vmmgo/vmm/vmm"
)

// attachConsole connects stdin to the guest's serial port.
func attachConsole(ctx context.Context, m *vmm.Machine, stderr io.Writer) (func(), error) {
	return pumpStdin(ctx, m, stderr, func(p []byte) error { return m.SerialInputWait(ctx, p) })
}

// attachVirtioConsole connects stdin to hvc0 the way attachConsole connects
// it to the serial port.
func attachVirtioConsole(ctx context.Context, m *vmm.Machine, in *io.PipeWriter, stderr io.Writer) (func(), error) {
	go func() {
		<-m.Done()
		in.Close() // ends the device's reader
	}()
	return pumpStdin(ctx, m, stderr, func(p []byte) error {
		_, err := in.Write(p)
		return err
	})
}

// pumpStdin feeds stdin to a guest console through deliver. When stdin is a
// terminal it goes into raw mode (restored on return, on the first signal and
// on a forced exit) and the escape sequences work: Ctrl-A x quits, Ctrl-A s
// dumps state, Ctrl-A h prints help. The pump ends at EOF (the guest keeps
// running without input), when deliver fails (the machine stopped) or when
// ctx ends.
func pumpStdin(ctx context.Context, m *vmm.Machine, stderr io.Writer, deliver func([]byte) error) (func(), error) {
	fd := int(os.Stdin.Fd())
	if termio.IsTerminal(fd) {
		restore, err := termio.MakeRaw(fd)
		if err != nil {
			return nil, fmt.Errorf("console: raw mode: %w", err)
		}
		var once sync.Once
		terminalRaw.Store(true)
		restoreTerminal = func() {
			once.Do(func() {
				_ = restore()
				terminalRaw.Store(false)
			})
		}
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
				if len(fwd) > 0 && deliver(fwd) != nil {
					return
				}
			}
			if err != nil || ctx.Err() != nil {
				return
			}
		}
	}()
	return restoreTerminal, nil
}
