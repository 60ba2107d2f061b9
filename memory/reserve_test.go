package memory

import "testing"

// TestReserveHugePagesNoRaiseWhenAvailable: asking for no more than the
// pool has changes nothing (other packages' tests share the pool and check
// its free count, so this test must not move it; the raising path runs in
// the VMM's hugetlb tests when the pool is short).
func TestReserveHugePagesNoRaiseWhenAvailable(t *testing.T) {
	before, err := ReadHugePool(HugePage2M)
	if err != nil {
		t.Fatal(err)
	}
	restore, err := ReserveHugePages(before.Available())
	if err != nil {
		t.Fatal(err)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if after, _ := ReadHugePool(HugePage2M); after.Total != before.Total {
		t.Errorf("pool total %d, was %d", after.Total, before.Total)
	}
}
