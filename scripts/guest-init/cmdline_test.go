package main

import (
	"reflect"
	"testing"
)

func TestSplitCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  console=ttyS0  quiet\n", []string{"console=ttyS0", "quiet"}},
		{`vmm.run="ls -l /" panic=-1`, []string{"vmm.run=ls -l /", "panic=-1"}},
		{`"vmm.run=echo hi" x`, []string{"vmm.run=echo hi", "x"}},
		{`a="" b`, []string{"a=", "b"}},
		{`unterminated="a b`, []string{"unterminated=a b"}},
	} {
		if got := splitCmdline(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCommandFromCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"console=ttyS0", nil},
		{"console=ttyS0 vmm.run=/bin/true", []string{"/bin/true"}},
		{`vmm.run="/bin/echo a  b" quiet`, []string{"/bin/echo", "a", "b"}},
		{"vmm.run=/a vmm.run=/b", []string{"/b"}},
		{"x -- vmm.run=/notme", nil},
		{"vmm.run=", nil},
		{"xvmm.run=/no", nil},
	} {
		got := commandFromCmdline(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("commandFromCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestExitLine(t *testing.T) {
	for code, want := range map[int]string{
		0:    "VMM-GUEST-INIT: exit 0",
		1:    "VMM-GUEST-INIT: exit 1",
		127:  "VMM-GUEST-INIT: exit 127",
		-1:   "VMM-GUEST-INIT: exit -1",
		1000: "VMM-GUEST-INIT: exit 1000",
	} {
		if got := exitLine(code); got != want {
			t.Errorf("exitLine(%d) = %q, want %q", code, got, want)
		}
	}
}
