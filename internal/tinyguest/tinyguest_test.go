package tinyguest

import (
	"bytes"
	"strings"
	"testing"
)

func TestAssemble(t *testing.T) {
	b, err := Assemble("mov $0x42, %al\nout %al, $0xf4\nhlt", 0x1000)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0xb0, 0x42, 0xe6, 0xf4, 0xf4}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x, want % x", b, want)
	}
	// Absolute references are resolved against org.
	b, err = Assemble("lbl: movabs $lbl, %rax", 0x200000)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[2:10], []byte{0, 0, 0x20, 0, 0, 0, 0, 0}) {
		t.Fatalf("label not relocated to org: % x", b)
	}
}

func TestAssembleErrorsNameTheLine(t *testing.T) {
	_, err := Assemble("notaninstruction %rax", 0)
	if err == nil || !strings.Contains(err.Error(), "notaninstruction") {
		t.Fatalf("err = %v, want assembler error naming the bad line", err)
	}
}
