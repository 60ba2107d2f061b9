// Package uroot builds u-root's core commands into an initramfs for
// internal/guestimage. It is separate so that programs which only need the
// guest kernel or a plain initramfs (the vmm CLI) do not link u-root's Go
// build machinery (and golang.org/x/tools with it).
package uroot

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/vmmgo/vmm/internal/guestimage"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/u-root/uio/llog"
)

// Commands adds about 50 of u-root's core commands as one busybox-style
// binary (/bbin/bb, a symlink per command) with /bin/sh -> rush. Pass it as
// guestimage.InitramfsOptions.URoot.
type Commands struct{}

// urootCommands are built into one busybox-style binary (/bbin/bb with a
// symlink per command). The list is explicit because only commands whose
// dependencies are already in this module's go.sum can be built offline
// (gosh, ip, dhclient, wget and others pull in modules we do not require);
// rush is u-root's small shell and becomes /bin/sh. u-root's own init is left
// out: /init is ours.
var urootCommands = func() []string {
	var pkgs []string
	for _, c := range strings.Fields(`cat chmod cp date df dirname dmesg du echo false find
		free grep head hexdump hostname id kill ln ls lsmod mkdir mknod more mount mv
		pci poweroff printenv ps pwd readlink rm seq shutdown sleep sort stty sync
		tail tee timeout touch tr true umount uname uniq uptime wc which xargs yes`) {
		pkgs = append(pkgs, "github.com/u-root/u-root/cmds/core/"+c)
	}
	return append(pkgs, "github.com/u-root/u-root/cmds/exp/rush")
}()

// Key names the u-root build for the cache key: the u-root version the
// module requires, the Go toolchain, and the command list.
func (Commands) Key(ctx context.Context, root string) (string, error) {
	ver := ""
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("u-root version: %w", err)
	}
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 2 && f[0] == "github.com/u-root/u-root" {
			ver = f[1]
		}
	}
	if ver == "" {
		return "", fmt.Errorf("u-root version: github.com/u-root/u-root not required by %s/go.mod", root)
	}
	gobin, err := guestimage.GoTool()
	if err != nil {
		return "", err
	}
	gv, err := exec.CommandContext(ctx, gobin, "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	return fmt.Sprintf("%s %s %s", ver, strings.TrimSpace(string(gv)), strings.Join(urootCommands, ",")), nil
}

// Records builds u-root's core commands in busybox mode with mkuimage
// into a cpio under tmp and returns its records (minus any /init). The
// records read from that file until closer is called.
func (Commands) Records(ctx context.Context, root, tmp string, log io.Writer) ([]cpio.Record, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	out := filepath.Join(tmp, "uroot.cpio")
	l := llog.New(slog.LevelInfo, func(format string, v ...any) {
		fmt.Fprintf(log, "u-root: "+format+"\n", v...)
	})
	err := uimage.Create(l,
		uimage.WithReplaceEnv(golang.Default(
			golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH("amd64"),
			golang.WithWorkingDir(root))),
		uimage.WithBusyboxCommands(urootCommands...),
		uimage.WithShell("rush"),
		uimage.WithSkipLDD(),
		uimage.WithTempDir(tmp),
		uimage.WithCPIOOutput(out),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("u-root busybox build: %w", err)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, nil, fmt.Errorf("u-root archive: %w", err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("u-root archive: %w", err)
	}
	keep := recs[:0]
	for _, r := range recs {
		if r.Name != "init" {
			keep = append(keep, r)
		}
	}
	return keep, func() { f.Close() }, nil
}
