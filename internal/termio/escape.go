package termio

import "fmt"

// DefaultEscape is Ctrl-A, QEMU's escape character.
const DefaultEscape = 0x01

// Action is something the user asked the VMM (not the guest) to do.
type Action int

// Actions an escape sequence can request.
const (
	ActionQuit  Action = iota + 1 // Ctrl-A x
	ActionStats                   // Ctrl-A s
	ActionHelp                    // Ctrl-A h (or ?)
)

func (a Action) String() string {
	switch a {
	case ActionQuit:
		return "quit"
	case ActionStats:
		return "stats"
	case ActionHelp:
		return "help"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// EscapeFilter separates the escape sequences from the console input
// stream. It keeps state across calls, so an escape character at the end
// of one read pairs with the command at the start of the next. It is not
// safe for concurrent use (one input goroutine owns it).
type EscapeFilter struct {
	// Escape is the escape character; 0 means DefaultEscape.
	Escape  byte
	pending bool // the last byte seen was the escape character
	quit    bool
}

// Filter returns the bytes to forward to the guest and the actions
// requested, in order. forward may share in's memory when in holds no
// escape character. After ActionQuit the rest of the input is dropped, and
// so is everything passed to later calls. A command character that is not
// recognised is dropped, as in QEMU.
func (f *EscapeFilter) Filter(in []byte) (forward []byte, actions []Action) {
	if f.quit {
		return nil, nil
	}
	esc := f.Escape
	if esc == 0 {
		esc = DefaultEscape
	}
	if !f.pending {
		clean := true
		for _, b := range in {
			if b == esc {
				clean = false
				break
			}
		}
		if clean {
			return in, nil
		}
	}
	forward = make([]byte, 0, len(in))
	for _, b := range in {
		if !f.pending {
			if b == esc {
				f.pending = true
			} else {
				forward = append(forward, b)
			}
			continue
		}
		f.pending = false
		switch b {
		case esc:
			forward = append(forward, esc)
		case 'x', 'X':
			f.quit = true
			return forward, append(actions, ActionQuit)
		case 's', 'S':
			actions = append(actions, ActionStats)
		case 'h', 'H', '?':
			actions = append(actions, ActionHelp)
		}
	}
	return forward, actions
}

// Help returns the text to show for ActionHelp, naming the escape
// character as Ctrl-<letter> when it is a control character.
func (f *EscapeFilter) Help() string {
	esc := f.Escape
	if esc == 0 {
		esc = DefaultEscape
	}
	name := fmt.Sprintf("%q", esc)
	switch {
	case esc >= 1 && esc <= 26:
		name = "Ctrl-" + string(rune('a'+esc-1))
	case esc >= 27 && esc <= 31: // Ctrl-[ Ctrl-\ Ctrl-] Ctrl-^ Ctrl-_
		name = "Ctrl-" + string(rune('@'+esc))
	}
	return fmt.Sprintf("\r\n"+
		"%[1]s h    print this help\r\n"+
		"%[1]s x    quit the VMM\r\n"+
		"%[1]s s    dump statistics\r\n"+
		"%[1]s %[1]s  send %[1]s to the guest\r\n", name)
}
