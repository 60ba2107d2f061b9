// Package vsock is the virtio socket device (virtio 1.2 §5.10) with the
// hybrid AF_UNIX host side used by Firecracker and Cloud Hypervisor:
//
//   - host → guest: a host program connects to the unix socket at Path and
//     writes "CONNECT <port>\n"; the device opens a stream to guest port
//     <port> and answers "OK <hostport>\n" once the guest accepts, after
//     which the unix connection carries the stream;
//   - guest → host: a guest connection to CID 2 port P is forwarded to the
//     unix socket "<Path>_<P>" (which a host program listens on).
//
// Streams use the 44-byte virtio_vsock_hdr and credit-based flow control
// (buf_alloc / fwd_cnt, §5.10.6.3): the device never sends more than the
// guest's advertised free space and advertises its own. The event queue
// carries VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.
//
// One worker goroutine per activation owns the queues and the connection
// table; each unix connection has a reader and a writer goroutine that talk
// to the worker through channels, so a stalled host program stalls only its
// own stream.
package vsock
