package vmm

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
)

// BusDevice is a device on the PIO or MMIO bus, implemented structurally by
// every port and MMIO device (vmm/devices/..., the virtio PCI transport).
// off is the offset from the base the device was registered at; len(data)
// is the access size (1, 2, 4 or 8; string I/O calls once per element);
// vcpu is the index of the vCPU that made the access, on whose thread the
// call runs. A read must fill all of data.
type BusDevice interface {
	BusRead(vcpu int, off uint64, data []byte)
	BusWrite(vcpu int, off uint64, data []byte)
}

type busRange struct {
	base, size uint64
	name       string
	dev        BusDevice
}

func (r busRange) end() uint64 { return r.base + r.size }

// Bus routes accesses to the device registered over an address range. It is
// used for both port I/O and MMIO. Registration takes a lock; lookups read an
// immutable, sorted snapshot, so the vCPU exit path never blocks on it.
type Bus struct {
	name   string
	mu     sync.Mutex                 // serialises registration
	ranges atomic.Pointer[[]busRange] // sorted by base, non-overlapping

	// Accesses to addresses no device claims: counted, and reported through
	// onMiss (rate-limited by the caller). Reads of such addresses return all
	// ones, as an empty bus does on real hardware.
	misses atomic.Uint64
	onMiss func(vcpu int, addr uint64, size int, write bool)
}

// NewBus returns an empty bus; name ("pio", "mmio") appears in errors.
func NewBus(name string) *Bus {
	b := &Bus{name: name}
	empty := []busRange{}
	b.ranges.Store(&empty)
	return b
}

// Register places dev at [base, base+size). Overlapping an existing device is
// an error naming both.
func (b *Bus) Register(name string, base, size uint64, dev BusDevice) error {
	if size == 0 {
		return fmt.Errorf("%s bus: device %q has zero size", b.name, name)
	}
	if base+size < base {
		return fmt.Errorf("%s bus: device %q range %#x+%#x wraps around", b.name, name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.ranges.Load()
	nr := busRange{base: base, size: size, name: name, dev: dev}
	for _, r := range old {
		if base < r.end() && r.base < nr.end() {
			return fmt.Errorf("%s bus: device %q [%#x, %#x) overlaps %q [%#x, %#x)",
				b.name, name, base, nr.end(), r.name, r.base, r.end())
		}
	}
	next := append(append([]busRange(nil), old...), nr)
	sort.Slice(next, func(i, j int) bool { return next[i].base < next[j].base })
	b.ranges.Store(&next)
	return nil
}

// Unregister removes the device registered at base.
func (b *Bus) Unregister(base uint64) bool { return b.unregister(base, nil) }

// UnregisterDevice removes the registration at base only if it is dev's:
// what a caller acting for the guest (a BAR move) uses, so that the guest
// cannot remove another device's registration by naming its address.
func (b *Bus) UnregisterDevice(base uint64, dev BusDevice) bool {
	if dev == nil {
		return false
	}
	return b.unregister(base, dev)
}

func (b *Bus) unregister(base uint64, dev BusDevice) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.ranges.Load()
	for i, r := range old {
		if r.base == base && (dev == nil || sameDevice(r.dev, dev)) {
			next := append(append([]busRange(nil), old[:i]...), old[i+1:]...)
			b.ranges.Store(&next)
			return true
		}
	}
	return false
}

// sameDevice reports whether a and b are the same device value, without
// the panic an == of two uncomparable dynamic types would raise.
func sameDevice(a, b BusDevice) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta != nil && ta.Comparable() && a == b
}

func (b *Bus) find(addr uint64) (busRange, bool) {
	rs := *b.ranges.Load()
	i := sort.Search(len(rs), func(i int) bool { return rs[i].end() > addr })
	if i < len(rs) && rs[i].base <= addr {
		return rs[i], true
	}
	return busRange{}, false
}

// Read dispatches a read of len(data) bytes at addr. An access that no device
// claims, or that runs past the end of the claiming device, reads all ones.
func (b *Bus) Read(vcpu int, addr uint64, data []byte) {
	r, ok := b.find(addr)
	if !ok || addr+uint64(len(data)) > r.end() {
		for i := range data {
			data[i] = 0xff
		}
		b.miss(vcpu, addr, len(data), false)
		return
	}
	r.dev.BusRead(vcpu, addr-r.base, data)
}

// Write dispatches a write; unclaimed writes are dropped.
func (b *Bus) Write(vcpu int, addr uint64, data []byte) {
	r, ok := b.find(addr)
	if !ok || addr+uint64(len(data)) > r.end() {
		b.miss(vcpu, addr, len(data), true)
		return
	}
	r.dev.BusWrite(vcpu, addr-r.base, data)
}

func (b *Bus) miss(vcpu int, addr uint64, size int, write bool) {
	b.misses.Add(1)
	if b.onMiss != nil {
		b.onMiss(vcpu, addr, size, write)
	}
}

// Misses is the number of accesses no device claimed.
func (b *Bus) Misses() uint64 { return b.misses.Load() }

// Devices lists the registered ranges (for logs and `vmm` diagnostics).
func (b *Bus) Devices() []string {
	var out []string
	for _, r := range *b.ranges.Load() {
		out = append(out, fmt.Sprintf("%#x-%#x %s", r.base, r.end()-1, r.name))
	}
	return out
}
