package vmm

import (
	"context"
	"errors"
)

// ServeGDB starts the GDB remote-protocol stub on addr (tcp:HOST:PORT or
// unix:PATH) for this machine. With wait, the vCPUs stay parked before their
// first instruction until the debugger continues. The returned function
// stops the server.
func (m *Machine) ServeGDB(ctx context.Context, addr string, wait bool) (func(), error) {
	return nil, errors.New("gdb stub not wired yet")
}
