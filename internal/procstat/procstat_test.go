package procstat

import (
	"os"
	"testing"
)

func TestTakeSeesAnOpenFile(t *testing.T) {
	a, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	if b.FDs != a.FDs+1 || a.Threads == 0 || a.RSSKiB == 0 || a.Goroutines == 0 {
		t.Fatalf("before %v, after opening a file %v", a, b)
	}
}
