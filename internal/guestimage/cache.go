package guestimage

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// modulePath is the Go module whose source tree holds scripts/.
const modulePath = "github.com/vmmgo/vmm"

// CacheDir returns the cache root shared with scripts/guest-kernel/build.sh:
// $VMM_CACHE_DIR, else $XDG_CACHE_HOME/vmm, else $HOME/.cache/vmm. It does not
// create the directory.
func CacheDir() string {
	if d := os.Getenv("VMM_CACHE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vmm")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "vmm-cache")
	}
	return filepath.Join(home, ".cache", "vmm")
}

// SourceDir returns the root of the vmm source tree (the directory holding
// go.mod for github.com/vmmgo/vmm and scripts/): $VMM_SOURCE_DIR when set,
// else the first ancestor of the working directory that is that module, else
// the tree this package was compiled from.
func SourceDir() (string, error) {
	if d := os.Getenv("VMM_SOURCE_DIR"); d != "" {
		if !isModuleRoot(d) {
			return "", fmt.Errorf("VMM_SOURCE_DIR=%s: no go.mod for %s there", d, modulePath)
		}
		return d, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if isModuleRoot(d) {
				return d, nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "..")
		if isModuleRoot(d) {
			return filepath.Clean(d), nil
		}
	}
	return "", errors.New("vmm source tree not found: run from inside it or set VMM_SOURCE_DIR")
}

// isModuleRoot reports whether dir/go.mod declares modulePath.
func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`) == modulePath
		}
	}
	return false
}
