package memory

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"testing"
	"unsafe"
)

func sliceAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func runtimeYield() { runtime.Gosched() }

// countMapsIn counts /proc/self/maps entries lying within [start, end).
func countMapsIn(t *testing.T, start, end uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var lo, hi uintptr
		if _, err := fmt.Sscanf(sc.Text(), "%x-%x", &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if lo >= start && hi <= end {
			n++
		}
	}
	return n
}
