package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDeviceAtomics(t *testing.T) {
	for _, harden := range []bool{false, true} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) {
			g := holeyGuest(t, GuestOptions{Harden: harden})
			if g.Stats().Hardened != harden {
				t.Fatalf("hardening %v, want %v", g.Stats().Hardened, harden)
			}
			// Both halves of a word, at the end of region A (the word
			// before the adjacent region B starts) and in region C.
			for _, gpa := range []GPA{0x1000, 0x1002, 4*mib - 2, 4*mib - 4, 12 * mib} {
				g.Write(gpa&^3, []byte{0x11, 0x22, 0x33, 0x44})
				if err := g.DeviceStore16(gpa, 0xbeef); err != nil {
					t.Fatalf("store16 %v: %v", gpa, err)
				}
				v, err := g.DeviceLoad16(gpa)
				if err != nil || v != 0xbeef {
					t.Fatalf("load16 %v = %#x, %v", gpa, v, err)
				}
				var w [4]byte
				g.Read(gpa&^3, w[:])
				want := [4]byte{0x11, 0x22, 0x33, 0x44}
				binary.LittleEndian.PutUint16(want[gpa&2:], 0xbeef)
				if w != want {
					t.Errorf("store16 %v: word is % x, want % x (the other half must stay)", gpa, w, want)
				}
			}
			w, err := g.DeviceLoad32(0x1000)
			if err != nil || w != 0xbeef2211 {
				t.Fatalf("load32 = %#x, %v", w, err)
			}
			if ok, err := g.DeviceCompareAndSwap32(0x1000, 1, 2); ok || err != nil {
				t.Errorf("cas32 with a wrong old value: %v, %v", ok, err)
			}
			if ok, err := g.DeviceCompareAndSwap32(0x1000, 0xbeef2211, 7); !ok || err != nil {
				t.Errorf("cas32: %v, %v", ok, err)
			}

			// Refusals: misaligned, outside RAM (the hole), private.
			before := g.Stats().DeviceRefused
			if _, err := g.DeviceLoad16(0x1001); !errors.Is(err, ErrInvalid) {
				t.Errorf("misaligned load16: %v", err)
			}
			if err := g.DeviceStore16(0x1003, 1); !errors.Is(err, ErrInvalid) {
				t.Errorf("misaligned store16: %v", err)
			}
			if _, err := g.DeviceLoad32(0x1002); !errors.Is(err, ErrInvalid) {
				t.Errorf("misaligned load32: %v", err)
			}
			if _, err := g.DeviceLoad16(9 * mib); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("load16 in the hole: %v", err)
			}
			if _, err := g.Convert(ConvertRequest{GPA: 0x1000, NPages: 1, Attrs: AttrPrivate}); err != nil {
				t.Fatal(err)
			}
			g.Write(0x1000, []byte{1, 2, 3, 4})
			if _, err := g.DeviceLoad16(0x1002); !errors.Is(err, ErrPrivate) {
				t.Errorf("load16 of a private page: %v", err)
			}
			if err := g.DeviceStore16(0x1000, 0xffff); !errors.Is(err, ErrPrivate) {
				t.Errorf("store16 to a private page: %v", err)
			}
			if _, err := g.DeviceCompareAndSwap32(0x1000, 0x04030201, 0); !errors.Is(err, ErrPrivate) {
				t.Errorf("cas32 on a private page: %v", err)
			}
			var b [4]byte
			g.Read(0x1000, b[:])
			if b != [4]byte{1, 2, 3, 4} {
				t.Errorf("a refused atomic changed the private page: % x", b)
			}
			if s := g.Stats(); s.DeviceRefused != before+3 || s.DeviceFaults != 0 {
				t.Errorf("refusals counted %d (want 3), faults %d", s.DeviceRefused-before, s.DeviceFaults)
			}
			if harden {
				// With the software check skipped, the hardened view stops
				// the atomic: the fault becomes the refused-access error.
				g.testSkipDeviceCheck = true
				_, err := g.DeviceLoad16(0x1000)
				err2 := g.DeviceStore16(0x1000, 0xffff)
				g.testSkipDeviceCheck = false
				if !errors.Is(err, ErrPrivate) || !errors.Is(err2, ErrPrivate) || g.Stats().DeviceFaults != 2 {
					t.Errorf("hardened view did not stop atomics that skipped the check: %v, %v, %+v", err, err2, g.Stats())
				}
			}
		})
	}
}

// TestDeviceAtomicsVsConversion is the hostile-guest race of the old ring
// index path (check the page, drop the lock, then touch the mapping): a
// guest converts the page holding a ring index to private, writes a secret
// there and checks it is still there before sharing the page again, while
// device goroutines load and store the index as fast as they can. With
// -race it also checks the locking. Under --harden the device atomics go
// through the view, so a store that slipped past the check would fault.
func TestDeviceAtomicsVsConversion(t *testing.T) {
	for _, harden := range []bool{false, true} {
		t.Run(fmt.Sprintf("harden=%v", harden), func(t *testing.T) {
			g := holeyGuest(t, GuestOptions{Harden: harden})
			const ring = GPA(4*mib - PageSize) // last page of region A
			idx := []GPA{ring, ring + 2, ring + 0x802, ring + PageSize - 2}
			var stop atomic.Bool
			var wg sync.WaitGroup
			var intrusions, conversions, ok, refused atomic.Uint64
			wg.Add(1)
			go func() { // the guest
				defer wg.Done()
				secret := []byte{0x5e, 0xc7}
				var b [2]byte
				for i := 0; !stop.Load(); i++ {
					if _, err := g.Convert(ConvertRequest{GPA: ring, NPages: 1, Attrs: AttrPrivate}); err != nil {
						t.Error(err)
						return
					}
					for _, a := range idx {
						g.Write(a, secret)
					}
					if i%8 == 0 {
						runtimeYield()
					}
					for _, a := range idx {
						g.Read(a, b[:])
						if b[0] != secret[0] || b[1] != secret[1] {
							intrusions.Add(1)
						}
					}
					for _, a := range idx {
						g.Write(a, []byte{0, 0}) // scrub before sharing
					}
					if _, err := g.Convert(ConvertRequest{GPA: ring, NPages: 1}); err != nil {
						t.Error(err)
						return
					}
					conversions.Add(2)
				}
			}()
			for d := 0; d < 3; d++ {
				wg.Add(1)
				go func(d int) { // a device serving the ring
					defer wg.Done()
					for i := 0; !stop.Load(); i++ {
						a := idx[i%len(idx)]
						var err error
						if (i+d)%2 == 0 {
							var v uint16
							v, err = g.DeviceLoad16(a)
							if err == nil && v == 0xc75e {
								intrusions.Add(1) // read the secret
							}
						} else {
							err = g.DeviceStore16(a, uint16(i)<<8|1) // never the secret
						}
						switch {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, ErrPrivate):
							refused.Add(1)
						default:
							t.Error(err)
							return
						}
					}
				}(d)
			}
			time.Sleep(300 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			s := g.Stats()
			t.Logf("conversions %d, atomics ok %d, refused %d", conversions.Load(), ok.Load(), refused.Load())
			if intrusions.Load() != 0 {
				t.Errorf("%d ring-index accesses touched the page while it was private", intrusions.Load())
			}
			if conversions.Load() == 0 || ok.Load() == 0 || refused.Load() == 0 {
				t.Errorf("the race did not happen: %d conversions, %d ok, %d refused", conversions.Load(), ok.Load(), refused.Load())
			}
			if s.DeviceFaults != 0 {
				t.Errorf("the hardened view faulted %d times: an atomic got past the check", s.DeviceFaults)
			}
		})
	}
}

// TestDeviceAccessSurvivesFault: when the host kernel itself refuses access
// to a page (guest_memfd with in-place conversion will SIGBUS on a private
// page), every device access path returns the refused-access error and the
// process lives. Two simulations: a PROT_NONE page in the VMM mapping
// (SIGSEGV) and a page beyond the end of a truncated memfd (a real SIGBUS).
// The tracker says shared throughout, as it would while the kernel and the
// VMM disagree.
func TestDeviceAccessSurvivesFault(t *testing.T) {
	access := map[string]func(g *Guest, gpa GPA) error{
		"read":    func(g *Guest, gpa GPA) error { return g.DeviceRead(gpa, make([]byte, 16)) },
		"write":   func(g *Guest, gpa GPA) error { return g.DeviceWrite(gpa, make([]byte, 16)) },
		"load16":  func(g *Guest, gpa GPA) error { _, err := g.DeviceLoad16(gpa); return err },
		"store16": func(g *Guest, gpa GPA) error { return g.DeviceStore16(gpa, 1) },
		"load32":  func(g *Guest, gpa GPA) error { _, err := g.DeviceLoad32(gpa); return err },
		"cas32":   func(g *Guest, gpa GPA) error { _, err := g.DeviceCompareAndSwap32(gpa, 0, 1); return err },
	}
	const size = 4 * mib
	const page = GPA(size - PageSize) // the last page
	for _, sim := range []string{"mprotect", "sigbus"} {
		t.Run(sim, func(t *testing.T) {
			b := testMemfd(t, size)
			g := newGuestT(t, GuestOptions{}, Region{GPA: 0, Size: size, Backend: b})
			mem := b.Bytes()
			switch sim {
			case "mprotect":
				if err := unix.Mprotect(mem[page:page+PageSize], unix.PROT_NONE); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Mprotect(mem[page:page+PageSize], unix.PROT_READ|unix.PROT_WRITE) })
			case "sigbus":
				if err := unix.Ftruncate(b.FD(), int64(page)); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Ftruncate(b.FD(), size) })
			}
			n := uint64(0)
			for name, fn := range access {
				err := fn(g, page+8)
				n++
				if !errors.Is(err, ErrPrivate) {
					t.Errorf("%s of the faulting page: %v, want ErrPrivate", name, err)
				}
				if err := fn(g, page-PageSize); err != nil {
					t.Errorf("%s of the page before: %v", name, err)
				}
			}
			if s := g.Stats(); s.DeviceFaults != n || s.DeviceRefused != n {
				t.Errorf("faults %d, refused %d, want %d each", s.DeviceFaults, s.DeviceRefused, n)
			}
			// A straddling read that faults on its second page: refused too.
			if err := g.DeviceRead(page-8, make([]byte, 16)); !errors.Is(err, ErrPrivate) {
				t.Errorf("straddling read: %v", err)
			}
		})
	}
}
