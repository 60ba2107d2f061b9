package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

func TestChecksFromCmdline(t *testing.T) {
	c, err := checksFromCmdline(`console=ttyS0 vmm.sleep=1500ms vmm.mount=/dev/vda,/mnt,ext4 vmm.cat=/mnt/a vmm.portecho=org.x vmm.vsockecho=1234 -- vmm.cat=/no`)
	if err != nil {
		t.Fatal(err)
	}
	if c.sleep != 1500*time.Millisecond || c.mount == nil || *c.mount != (mountSpec{"/dev/vda", "/mnt", "ext4"}) ||
		c.cat != "/mnt/a" || c.portEcho != "org.x" || c.vsockEcho != 1234 {
		t.Errorf("checks = %+v (mount %+v)", c, c.mount)
	}
	if c, err := checksFromCmdline("console=ttyS0 quiet"); err != nil || c.sleep != 0 || c.mount != nil || c.cat != "" || c.portEcho != "" || c.vsockEcho != 0 {
		t.Errorf("no checks asked: %+v, %v", c, err)
	}
	for _, bad := range []string{"vmm.sleep=soon", "vmm.sleep=-1s", "vmm.mount=/dev/vda,/mnt", "vmm.mount=,,", "vmm.vsockecho=x", "vmm.vsockecho=99999999999", "vmm.ddread=/dev/vdb", "vmm.ddread=/dev/vdb,0", "vmm.ddread=,4", "vmm.ddread=/dev/vdb,x"} {
		if _, err := checksFromCmdline(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestEchoOnce: one line in, "echo:" + the line back.
func TestEchoOnce(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	done := make(chan error, 1)
	go func() { _, err := echoOnce(b); b.Close(); done <- err }()
	if _, err := a.Write([]byte("hello there\n")); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	buf := make([]byte, 64)
	for !strings.HasSuffix(got.String(), "\n") {
		n, err := a.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(buf[:n])
	}
	if got.String() != "echo:hello there\n" {
		t.Errorf("reply %q", got.String())
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestDDReadParse(t *testing.T) {
	c, err := checksFromCmdline("vmm.ddread=/dev/vdb,64")
	if err != nil || c.ddRead == nil || *c.ddRead != (ddSpec{"/dev/vdb", 64}) {
		t.Errorf("vmm.ddread=/dev/vdb,64: %+v, %v", c.ddRead, err)
	}
}
