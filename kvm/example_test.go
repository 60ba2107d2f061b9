package kvm_test

import (
	"fmt"

	"github.com/vmmgo/vmm/kvm"
)

// Capabilities carry their kernel name and what they mean to the VMM.
func ExampleCap() {
	c := kvm.CapGuestMemfdFlags
	fmt.Println(uint32(c), c)
	fmt.Println(kvm.Cap(999))
	// Output:
	// 244 KVM_CAP_GUEST_MEMFD_FLAGS
	// Cap(999)
}

// The run page is untrusted input: accessors decode it with bounds
// checks. A synthetic exit (what tests feed the exit path when the host
// cannot produce the exit) decodes like a real one.
func ExampleRun() {
	buf := make([]byte, kvm.RunSize+64)
	r := kvm.NewRun(buf)
	if err := r.PutIO(kvm.IOExit{Direction: kvm.IOOut, Size: 1, Port: 0x3f8, Count: 2, DataOffset: kvm.RunSize, Data: []byte("hi")}); err != nil {
		fmt.Println(err)
		return
	}
	io, err := r.IO()
	fmt.Printf("%v port %#x out=%v %q %v\n", r.ExitReason(), io.Port, io.Direction == kvm.IOOut, io.Data, err)

	// A hostile run page: data said to lie outside the mapping.
	copy(buf[kvm.RunOffIODataOffset:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	_, err = r.IO()
	fmt.Println("bad offset refused:", err != nil)

	// The answer to a refused share/unshare hypercall.
	fmt.Printf("%#x\n", kvm.HypercallErrno(kvm.KVMEINVAL))
	// Output:
	// KVM_EXIT_IO port 0x3f8 out=true "hi" <nil>
	// bad offset refused: true
	// 0xffffffffffffffea
}
