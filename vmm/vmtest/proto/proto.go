package proto

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Frame prefixes.
const (
	Begin  = "VMTEST-BEGIN: "
	Out    = "VMTEST-OUT: "
	Result = "VMTEST-RESULT: "

	// Version is the protocol version the BEGIN frame carries.
	Version = "v1"
	// InGuestEnv is set to "1" by the agent in the test binary's environment.
	InGuestEnv = "VMTEST_IN_GUEST"
	// ArgsFile holds the test binary's arguments, one per line.
	ArgsFile = "/vmtest/args"
	// TestBinary is where the test binary is put in the guest.
	TestBinary = "/vmtest/test"
	// AgentPath is where the agent is put; the kernel runs it as rdinit=.
	AgentPath = "/vmtest/agent"
)

// FormatResult is the RESULT frame for exit code code.
func FormatResult(code int) string { return Result + "exit=" + strconv.Itoa(code) }

// Kind is the kind of a decoded line.
type Kind int

const (
	KindNone   Kind = iota // not a frame (kernel output, garbage)
	KindBegin              // Text is the version
	KindOut                // Text is the test's output line
	KindResult             // Code is the exit code
)

// Frame is one decoded line.
type Frame struct {
	Kind Kind
	Text string
	Code int
}

// ErrMalformed marks a line that carries a frame prefix but not a valid
// frame (a corrupted result, an unknown version).
var ErrMalformed = errors.New("malformed vmtest frame")

// Decode decodes one console line (without its line end).
func Decode(line string) (Frame, error) {
	line = strings.TrimRight(line, "\r\n")
	for _, p := range []struct {
		prefix string
		kind   Kind
	}{{Out, KindOut}, {Result, KindResult}, {Begin, KindBegin}} {
		i := strings.Index(line, p.prefix)
		if i < 0 {
			continue
		}
		rest := line[i+len(p.prefix):]
		switch p.kind {
		case KindOut:
			return Frame{Kind: KindOut, Text: rest}, nil
		case KindBegin:
			if rest != Version {
				return Frame{}, fmt.Errorf("%w: version %q, want %q", ErrMalformed, rest, Version)
			}
			return Frame{Kind: KindBegin, Text: rest}, nil
		case KindResult:
			v, ok := strings.CutPrefix(strings.TrimSpace(rest), "exit=")
			code, err := strconv.Atoi(v)
			if !ok || err != nil || code < -1 || code > 1<<16 {
				return Frame{}, fmt.Errorf("%w: result %q", ErrMalformed, rest)
			}
			return Frame{Kind: KindResult, Code: code}, nil
		}
	}
	return Frame{}, nil
}
