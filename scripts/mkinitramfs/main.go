// Command mkinitramfs writes the vmm test initramfs: an uncompressed newc
// cpio (in-kernel decompression is emulated and slow on no-VMX hosts) with
// the static Go /init from scripts/guest-init, optionally u-root's core
// commands, and extra host files. The image is cached by content hash under
// the vmm cache directory (see internal/guestimage.CacheDir); the path is
// printed on stdout.
//
// Usage:
//
//	go run ./scripts/mkinitramfs [-uroot] [-file host:guest ...] [-o out.cpio] [-list]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/vmmgo/vmm/internal/guestimage"
	urootcmds "github.com/vmmgo/vmm/internal/guestimage/uroot"
)

type fileFlags []guestimage.File

func (f *fileFlags) String() string { return fmt.Sprint(*f) }

func (f *fileFlags) Set(s string) error {
	file, err := guestimage.ParseFile(s)
	if err != nil {
		return err
	}
	*f = append(*f, file)
	return nil
}

func main() {
	var files fileFlags
	uroot := flag.Bool("uroot", false, "add u-root's core commands (busybox mode, /bin/sh = rush)")
	out := flag.String("o", "", "also copy the image to this path")
	list := flag.Bool("list", false, "list the image's entries on stderr")
	quiet := flag.Bool("q", false, "no progress output")
	flag.Var(&files, "file", "extra file as host-path:guest-path (repeatable)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "mkinitramfs: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, files, *uroot, *out, *list, *quiet); err != nil {
		fmt.Fprintf(os.Stderr, "mkinitramfs: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, files []guestimage.File, uroot bool, out string, list, quiet bool) error {
	var log io.Writer = os.Stderr
	if quiet {
		log = nil
	}
	opts := guestimage.InitramfsOptions{Files: files, Log: log}
	if uroot {
		opts.URoot = urootcmds.Commands{}
	}
	p, err := guestimage.Initramfs(ctx, opts)
	if err != nil {
		return err
	}
	if list {
		entries, err := guestimage.ListInitramfs(p)
		if err != nil {
			return err
		}
		names := make([]string, 0, len(entries))
		for n := range entries {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			e := entries[n]
			fmt.Fprintf(os.Stderr, "%07o %9d %s\n", e.Mode, e.FileSize, n)
		}
	}
	if out != "" {
		if err := copyFile(p, out); err != nil {
			return err
		}
		p = out
	}
	fmt.Println(p)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	o, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := io.Copy(o, in); err != nil {
		o.Close()
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := o.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
