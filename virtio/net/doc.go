// Package net is the virtio network device (virtio 1.2 §5.1) over a Linux
// TAP device opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, by name or as an
// already-open file descriptor. With VIRTIO_F_VERSION_1 the virtio_net_hdr is
// 12 bytes (§5.1.6); the TAP is told the same size (TUNSETVNETHDRSZ), so a
// transmitted chain goes to the TAP as one write and a received packet
// comes from it with its header ready for the guest. Checksum and TSO
// offloads are offered to the guest only if TUNSETOFFLOAD accepts them, and
// enabled on the TAP as the guest negotiates them.
//
// The receive and transmit queues are each served by their own goroutine.
// Guest-supplied headers are validated (ParseHeader) before a frame reaches
// the host; a chain touching a private page is dropped and counted.
package net
