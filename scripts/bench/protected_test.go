package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseProtected(t *testing.T) {
	stdout := "[    1.0] vmmgo: boot conversions: 40 set_memory calls, 12 requests to the VMM, 2100 pages shared, 3 made private, 0 failed, 5120 us\r\nRun /init as init process\r\n"
	stderr := "level=info msg=x\r\nguest memory: anon 256 MiB, shared 2097 pages, private 63439 pages\r\n" +
		"conversions: to-private 3, to-shared 9, pages converted 2100, refused 0, device accesses refused 0\r\n" +
		"conversions via pvmem-register: 1 requests (0 refused), 2 pages changed, 15µs\r\n" +
		"conversions via pvmem-list: 11 requests (1 refused), 2098 pages changed, 1.5ms\r\n" +
		"host footprint of guest RAM: 1 bytes in use\r\n"
	p, err := parseProtected([]byte(stdout), []byte(stderr))
	if err != nil {
		t.Fatal(err)
	}
	want := protectedStats{shared: 2097, private: 63439, requests: 12, refused: 1, vmmTime: 1515 * time.Microsecond,
		guestCalls: 40, guestExits: 12, guestTime: 5120 * time.Microsecond}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	if !strings.Contains(p.String(), "96.8 % private") {
		t.Errorf("String() = %q", p)
	}
	if _, err := parseProtected([]byte(stdout), []byte("level=info\n")); err == nil {
		t.Errorf("no memory report: want an error")
	}
	if _, err := parseProtected(nil, []byte(stderr)); err == nil {
		t.Errorf("no guest report: want an error")
	}
}
