package guestimage

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DebianKernelImages is one of Debian's own kernel packages, unpacked
// unmodified into the cache by scripts/debian-kernel.sh.
type DebianKernelImages struct {
	Dir     string // debian-kernel-<package>_<version>/
	VMLinuz string // the bzImage as Debian ships it
	Modules string // its lib/modules/<kver> tree
	KVer    string // the kernel release (uname -r)
	Package string // "<package> <version>"
}

// debianScript is debian-kernel.sh relative to the source tree.
const debianScript = "scripts/debian-kernel.sh"

// DebianKernel returns Debian's kernel of the given flavour ("amd64" or
// "cloud-amd64"), downloading the package with apt-get (nothing is
// installed) and unpacking it once; later calls reuse the cache entry, also
// offline. Progress goes to log (nil: discarded).
func DebianKernel(ctx context.Context, flavour string, log io.Writer) (DebianKernelImages, error) {
	root, err := SourceDir()
	if err != nil {
		return DebianKernelImages{}, err
	}
	out, err := runScript(ctx, log, filepath.Join(root, debianScript), root, nil, flavour)
	if err != nil {
		return DebianKernelImages{}, err
	}
	dir := lastLine(out)
	if dir == "" {
		return DebianKernelImages{}, fmt.Errorf("%s printed no cache directory", debianScript)
	}
	d := DebianKernelImages{Dir: dir, VMLinuz: filepath.Join(dir, "vmlinuz"), Modules: filepath.Join(dir, "modules")}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"kver", &d.KVer}, {"package", &d.Package}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return DebianKernelImages{}, fmt.Errorf("cache entry %s of a Debian kernel is incomplete: %w", dir, err)
		}
		*f.dst = strings.TrimSpace(string(b))
	}
	if _, err := os.Stat(d.VMLinuz); err != nil {
		return DebianKernelImages{}, fmt.Errorf("cache entry %s of a Debian kernel is incomplete: %w", dir, err)
	}
	return d, nil
}
