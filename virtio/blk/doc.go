// Package blk is the virtio block device (virtio 1.2 §5.2) over a raw image
// file or block device: read, write, flush (fdatasync), get-id, and discard
// and write-zeroes (fallocate) when the file supports them.
//
// Every request is validated before anything is touched: header and status
// placement, sector range against the capacity, read-only, and the page
// state of every buffer (a request naming a private page completes with
// VIRTIO_BLK_S_IOERR, is counted, and nothing else is read or written).
// Host I/O errors (EIO, ENOSPC) also complete with IOERR and the device keeps
// serving. Requests are served on one goroutine per active device.
package blk
