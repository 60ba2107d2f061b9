// Package vmm assembles and runs a virtual machine: it owns the build recipe
// (create the VM, its memory, vCPUs, load the kernel, attach devices, start),
// the machine memory map (layout_amd64.go), the PIO and MMIO buses, the vCPU
// goroutines and their run loop, interrupt routing and the wiring of guest
// share/unshare requests to the memory package's conversion routine.
//
// Only cmd/vmm imports this package. Devices live in sub-packages
// (vmm/devices/...) and in virtio; they never import vmm.
package vmm
