package vmm

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmmgo/vmm/internal/guestimage"
)

func TestGDBScratchLinux(t *testing.T) {
	gdb := gdbPath(t)
	var buildLog bytes.Buffer
	k, err := guestimage.Kernel(context.Background(), &buildLog)
	if err != nil {
		t.Fatal(err)
	}
	kernel, _ := os.ReadFile(k.VMLinux)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.CPUs = 2
	cfg.Memory = 256 << 20
	cfg.Timeout = 90 * time.Second
	con := &syncBuffer{}
	cfg.Console = con
	m, _ := New(cfg)
	t.Cleanup(func() { m.Close() })
	m.LoadLinux(LinuxConfig{Kernel: kernel, Cmdline: "nokaslr"})
	sock := t.TempDir() + "/gdb.sock"
	stop, _ := m.ServeGDB(ctx, "unix:"+sock, true)
	t.Cleanup(stop)
	done := make(chan Result, 1)
	go func() { r, _ := m.Run(ctx); done <- r }()
	cmds := append([]string{"file " + k.VMLinux, "target remote " + sock}, strings.Split(os.Getenv("GDBCMDS"), ";")...)
	runGDB(t, ctx, gdb, cmds...)
	res := waitResult(t, done, 95*time.Second)
	t.Logf("%v %#x %s\n%s", res.Outcome, res.Code, res.Detail, res.Dump)
}
