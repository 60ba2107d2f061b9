package guestimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/cpio"
)

// Console markers printed by the guest /init (scripts/guest-init).
const (
	MarkerHello      = "VMM-GUEST-INIT: hello from userspace"
	MarkerExitPrefix = "VMM-GUEST-INIT: exit " // followed by the decimal exit code
	// RunParam is the kernel command-line parameter whose value /init runs,
	// e.g. vmm.run="/bin/ls -l /".
	RunParam = "vmm.run"
)

// initramfsFormat is part of every initramfs cache key: bump it when the
// layout written below changes.
const initramfsFormat = "vmm-initramfs v1"

// File is a host file to copy into the initramfs.
type File struct {
	Host  string // path on the host; must be a regular file (symlinks followed)
	Guest string // path in the guest, e.g. /bin/test; leading "/" optional
}

// ParseFile parses "host:guest" (the -file flag of scripts/mkinitramfs).
func ParseFile(s string) (File, error) {
	host, guest, ok := strings.Cut(s, ":")
	if !ok || host == "" || guest == "" {
		return File{}, fmt.Errorf("file spec %q: want host-path:guest-path", s)
	}
	return File{Host: host, Guest: guest}, nil
}

// Extra adds prebuilt records to an initramfs; Key must change whenever
// the records would.
type Extra interface {
	Key(ctx context.Context, root string) (string, error)
	Records(ctx context.Context, root, tmp string, log io.Writer) ([]cpio.Record, func(), error)
}

// InitramfsOptions says what goes into the initramfs besides /init.
type InitramfsOptions struct {
	// Files are extra host files, for test harnesses.
	Files []File
	// URoot, when set (uroot.Commands{}), adds u-root's core commands for
	// a shell on hosts with hardware virtualization (vmm.run=/bin/sh). The
	// first build takes about 15 s and adds about 4.6 MB.
	URoot Extra
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Initramfs returns the path of a cached uncompressed newc cpio holding the
// static guest /init (scripts/guest-init), the device nodes the kernel needs
// before /dev is mounted (/dev/console, /dev/null), and opts' extras. The
// cache key covers the /init binary, every extra file's path, mode and
// content, and the u-root choice; a hit returns without writing anything.
func Initramfs(ctx context.Context, opts InitramfsOptions) (string, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	start := time.Now()
	root, err := SourceDir()
	if err != nil && (os.Getenv(InitEnv) == "" || opts.URoot != nil) {
		return "", err // the source tree is needed to build /init or u-root
	}
	cache := CacheDir()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	tmp, err := os.MkdirTemp(cache, ".initramfs-build-")
	if err != nil {
		return "", fmt.Errorf("initramfs temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	initBin := filepath.Join(tmp, "init")
	if err := buildGuestInit(ctx, root, initBin); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "guestimage: built /init in %v\n", time.Since(start).Round(time.Millisecond))

	files, err := resolveFiles(opts.Files)
	if err != nil {
		return "", err
	}
	key, err := initramfsKey(ctx, root, initBin, files, opts.URoot)
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "initramfs-"+key+".cpio")
	if _, err := os.Stat(out); err == nil {
		fmt.Fprintf(log, "guestimage: initramfs cache hit %s\n", out)
		return out, nil
	}

	var extra []cpio.Record
	if opts.URoot != nil {
		fmt.Fprintf(log, "guestimage: building u-root core commands (busybox mode)\n")
		recs, closer, err := opts.URoot.Records(ctx, root, tmp, log)
		if err != nil {
			return "", err
		}
		defer closer()
		extra = recs
	}

	part := filepath.Join(tmp, "initramfs.cpio")
	if err := writeInitramfs(part, initBin, files, extra); err != nil {
		return "", err
	}
	if err := os.Rename(part, out); err != nil {
		return "", fmt.Errorf("initramfs: %w", err)
	}
	fmt.Fprintf(log, "guestimage: wrote %s in %v\n", out, time.Since(start).Round(time.Millisecond))
	return out, nil
}

// GoTool returns the go command to build the guest init with.
func GoTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{filepath.Join(os.Getenv("GOROOT"), "bin", "go"), "/usr/local/go/bin/go"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("go toolchain not found in PATH, $GOROOT/bin or /usr/local/go/bin")
}

// InitEnv names a prebuilt scripts/guest-init binary that Initramfs uses
// instead of building one (for hosts without a Go toolchain, such as the L1
// guest of scripts/nested-kvm.sh).
const InitEnv = "VMM_GUEST_INIT"

// buildGuestInit builds scripts/guest-init as a static, reproducible linux/amd64
// binary at out, or copies $VMM_GUEST_INIT there.
func buildGuestInit(ctx context.Context, root, out string) error {
	if p := os.Getenv(InitEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("%s: %w", InitEnv, err)
		}
		return os.WriteFile(out, b, 0o755)
	}
	gobin, err := GoTool()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w", "-o", out, "./scripts/guest-init")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build scripts/guest-init: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// resolvedFile is a File checked against the host, with its guest name
// normalized (no leading "/").
type resolvedFile struct {
	host, name string
	mode       os.FileMode
	size       int64
}

// reservedNames are written by writeInitramfs itself.
var reservedNames = map[string]bool{"init": true, "dev/console": true, "dev/null": true}

func resolveFiles(files []File) ([]resolvedFile, error) {
	seen := map[string]bool{}
	var out []resolvedFile
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean("/"+f.Guest), "/")
		if name == "" || strings.Contains(f.Guest, "\x00") {
			return nil, fmt.Errorf("initramfs file %q: bad guest path", f.Guest)
		}
		if reservedNames[name] || seen[name] {
			return nil, fmt.Errorf("initramfs file %q: path already used", f.Guest)
		}
		seen[name] = true
		fi, err := os.Stat(f.Host)
		if err != nil {
			return nil, fmt.Errorf("initramfs file: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("initramfs file %s: not a regular file", f.Host)
		}
		out = append(out, resolvedFile{host: f.Host, name: name, mode: fi.Mode().Perm(), size: fi.Size()})
	}
	return out, nil
}

// initramfsKey hashes everything that determines the image's bytes.
func initramfsKey(ctx context.Context, root, initBin string, files []resolvedFile, uroot Extra) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", initramfsFormat)
	sum, err := fileSHA256(initBin)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "init %s\n", sum)
	for _, f := range files {
		sum, err := fileSHA256(f.host)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "file %q %o %s\n", f.name, f.mode, sum)
	}
	if uroot != nil {
		v, err := uroot.Key(ctx, root)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "uroot %s\n", v)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hash: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// archive collects records, adding parent directories before their
// children (the kernel's unpacker does not create them, see
// init/initramfs.c) and keeping the first record written for each name.
type archive struct {
	recs  []cpio.Record
	names map[string]bool
}

func (a *archive) add(r cpio.Record) {
	r.Name = cpio.Normalize(r.Name)
	if r.Name == "" || r.Name == "." || a.names[r.Name] {
		return
	}
	if dir := path.Dir(r.Name); dir != "." && !a.names[dir] {
		a.add(cpio.Directory(dir, 0o755))
	}
	a.names[r.Name] = true
	a.recs = append(a.recs, r)
}

// writeInitramfs writes the newc cpio to out.
func writeInitramfs(out, initBin string, files []resolvedFile, extra []cpio.Record) (err error) {
	a := &archive{names: map[string]bool{}}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "var"} {
		a.add(cpio.Directory(d, 0o755))
	}
	a.add(cpio.Directory("tmp", 0o1777))
	// The kernel opens /dev/console for init's stdio before anything is
	// mounted (init/main.c console_on_rootfs), so the node must be in the
	// archive itself.
	a.add(cpio.CharDev("dev/console", 0o600, 5, 1))
	a.add(cpio.CharDev("dev/null", 0o666, 1, 3))

	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	openRec := func(host, name string, mode os.FileMode) error {
		f, err := os.Open(host)
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		opened = append(opened, f)
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		a.add(cpio.Record{ReaderAt: f, Info: cpio.Info{
			Name: name, Mode: cpio.S_IFREG | uint64(mode.Perm()), FileSize: uint64(fi.Size()),
		}})
		return nil
	}
	if err := openRec(initBin, "init", 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := openRec(f.host, f.name, f.mode); err != nil {
			return err
		}
	}
	for _, r := range extra {
		a.add(r)
	}

	o, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if cerr := o.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("initramfs: %w", cerr)
		}
	}()
	w := cpio.Newc.Writer(o)
	for i, r := range a.recs {
		r = cpio.MakeReproducible(r)
		r.Ino = uint64(i + 1) // unique, so the unpacker sees no hard links
		r.NLink = 1
		if r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			r.NLink = 2
		}
		if err := w.WriteRecord(r); err != nil {
			return fmt.Errorf("initramfs: write %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return fmt.Errorf("initramfs: trailer: %w", err)
	}
	return nil
}

// ListInitramfs returns the entries of a newc cpio by name (as stored: no
// leading "/"); tests and the CLI use it to inspect images.
func ListInitramfs(p string) (map[string]cpio.Info, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("list initramfs: %w", err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		return nil, fmt.Errorf("list initramfs %s: %w", p, err)
	}
	out := make(map[string]cpio.Info, len(recs))
	for _, r := range recs {
		out[r.Name] = r.Info
	}
	return out, nil
}
