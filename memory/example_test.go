package memory_test

import (
	"errors"
	"fmt"

	"github.com/vmmgo/vmm/memory"
)

// Guest RAM from one anonymous backing: the VMM reads and writes it freely,
// a conversion to private flips the page state in place (the bytes stay),
// and device-model accesses to the private page are refused.
func Example() {
	b, err := memory.NewBackend(memory.KindAnon, 2<<20, memory.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	g, err := memory.NewGuest(memory.Region{GPA: 0, Size: 2 << 20, Backend: b})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close()

	if err := g.Write(0x1000, []byte("virtqueue")); err != nil {
		fmt.Println(err)
		return
	}
	res, err := g.Convert(memory.ConvertRequest{GPA: 0x1000, NPages: 1, Attrs: memory.AttrPrivate})
	fmt.Println("converted:", res.Changed, err)

	buf := make([]byte, 9)
	err = g.DeviceRead(0x1000, buf)
	fmt.Println("device read refused:", errors.Is(err, memory.ErrPrivate))
	_ = g.Read(0x1000, buf) // the VMM's own view is unchecked
	fmt.Printf("content kept: %s\n", buf)

	_, err = g.Convert(memory.ConvertRequest{GPA: 0x1001, NPages: 1})
	fmt.Println("unaligned request refused:", errors.Is(err, memory.ErrInvalid))
	// Output:
	// converted: 1 <nil>
	// device read refused: true
	// content kept: virtqueue
	// unaligned request refused: true
}
