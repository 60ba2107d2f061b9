// Package virtiotest is a fake virtio driver for tests: a fake guest memory
// (a byte slice with a set of private pages, implementing
// virtio.AtomicMemory) and a driver that lays out split virtqueue rings in
// it, posts direct and indirect chains, writes raw (malformed) descriptors,
// and reads used entries back (virtio 1.2 §2.7, driver side).
package virtiotest
