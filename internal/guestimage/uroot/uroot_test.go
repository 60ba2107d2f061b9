package uroot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmmgo/vmm/internal/guestimage"
)

func TestKeyNamesVersionAndCommands(t *testing.T) {
	root, err := guestimage.SourceDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := Commands{}.Key(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(k, "v0.") || !strings.Contains(k, "go1.") || !strings.Contains(k, "rush") {
		t.Fatalf("key %q lacks the u-root version, Go version or command list", k)
	}
	// A tree whose go.mod does not require u-root cannot build it.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644)
	if _, err := (Commands{}).Key(context.Background(), dir); err == nil {
		t.Fatal("Key accepted a go.mod without u-root")
	}
}
