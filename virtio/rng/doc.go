// Package rng is the virtio entropy device (virtio 1.2 §5.4): one request
// queue whose device-writable buffers are filled from the host kernel's
// getrandom(2). A request touching a private page is completed with length
// 0 (entropy devices have no status byte), counted, and nothing is written.
package rng
