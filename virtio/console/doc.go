// Package console is the virtio console device (virtio 1.2 §5.3): port 0 is
// the guest's hvc0 console, wired to an io.Reader/io.Writer; with
// VIRTIO_CONSOLE_F_MULTIPORT it also offers named ports (virtio-serial,
// /dev/vport*p*), whose host sides are io.ReadWriteClosers such as one end
// of net.Pipe or an accepted unix-socket connection. The control queues
// carry DEVICE_READY, DEVICE_ADD, PORT_READY, CONSOLE_PORT, PORT_NAME and
// PORT_OPEN messages (§5.3.6.2).
//
// One worker goroutine per activation owns every queue; a reader goroutine
// per host input feeds it through a channel and a writer goroutine per port
// drains guest output, so a slow host side never blocks a vCPU or a reset.
package console
