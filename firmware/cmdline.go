package firmware

import (
	"fmt"
	"strings"
)

// Command-line limits (Documentation/arch/x86/boot.rst, "cmdline_size").
const (
	// CmdlineSizeOld is the limit before boot protocol 2.06 (255 + NUL).
	CmdlineSizeOld = 255
	// CmdlineSizeDefault is x86 COMMAND_LINE_SIZE, used when the image has no
	// setup header (ELF vmlinux, PVH).
	CmdlineSizeDefault = 2047
)

// CheckCmdline verifies that s fits in limit bytes (without the terminating
// NUL) and contains no NUL byte.
func CheckCmdline(s string, limit uint32) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("cmdline: NUL byte at offset %d", i)
	}
	if uint64(len(s)) > uint64(limit) {
		return fmt.Errorf("cmdline: %d bytes exceeds the kernel's limit of %d bytes", len(s), limit)
	}
	return nil
}

// cmdlineBytes returns s NUL-terminated.
func cmdlineBytes(s string) []byte { return append([]byte(s), 0) }

// Param is one kernel parameter: Key, or Key=Value. Quoted values keep their
// quotes out of Value; String puts them back when needed.
type Param struct {
	Key, Value string
	HasValue   bool
}

// Cmdline is a parsed kernel command line, splitting the way the kernel's
// next_arg() does (lib/cmdline.c): whitespace separates parameters, double
// quotes protect spaces, "--" ends kernel parameters (the rest goes to init).
type Cmdline struct {
	Params []Param
	Init   []string // after "--"; passed verbatim, space-separated
}

// ParseCmdline parses s. It fails on a NUL byte or an unterminated quote.
func ParseCmdline(s string) (*Cmdline, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return nil, fmt.Errorf("cmdline: NUL byte at offset %d", i)
	}
	c := &Cmdline{}
	for _, w := range splitArgs(s, &c.Init) {
		if w == "" {
			continue
		}
		p := Param{Key: w}
		if i := strings.IndexByte(w, '='); i >= 0 {
			p = Param{Key: w[:i], Value: w[i+1:], HasValue: true}
		}
		p.Key = strings.ReplaceAll(p.Key, "\"", "")
		p.Value = strings.ReplaceAll(p.Value, "\"", "")
		if p.Key == "" && !p.HasValue {
			continue // a bare "" is nothing
		}
		c.Params = append(c.Params, p)
	}
	if strings.Count(s, "\"")%2 != 0 {
		return nil, fmt.Errorf("cmdline: unterminated double quote")
	}
	return c, nil
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

// splitArgs splits at unquoted whitespace; words after a lone "--" go to init.
func splitArgs(s string, init *[]string) []string {
	var out []string
	i := 0
	for i < len(s) {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		start, quoted := i, false
		for i < len(s) && (quoted || !isSpace(s[i])) {
			if s[i] == '"' {
				quoted = !quoted
			}
			i++
		}
		w := s[start:i]
		if w == "--" {
			*init = strings.Fields(s[i:])
			return out
		}
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

// Get returns the value of the last occurrence of key (the kernel's
// "last one wins" for most parameters).
func (c *Cmdline) Get(key string) (string, bool) {
	for i := len(c.Params) - 1; i >= 0; i-- {
		if c.Params[i].Key == key {
			return c.Params[i].Value, true
		}
	}
	return "", false
}

// Set replaces every occurrence of key with key=value (appending when absent).
func (c *Cmdline) Set(key, value string) {
	out := c.Params[:0]
	for _, p := range c.Params {
		if p.Key != key {
			out = append(out, p)
		}
	}
	c.Params = append(out, Param{Key: key, Value: value, HasValue: true})
}

// Add appends a parameter without touching existing ones (for parameters that
// may repeat, such as virtio_mmio.device=).
func (c *Cmdline) Add(key, value string) {
	c.Params = append(c.Params, Param{Key: key, Value: value, HasValue: true})
}

// String renders the command line, quoting values that contain whitespace.
func (c *Cmdline) String() string {
	var b strings.Builder
	for i, p := range c.Params {
		if i > 0 {
			b.WriteByte(' ')
		}
		if p.Key == "--" && !p.HasValue {
			b.WriteString(`"--"`) // a parameter, not the init separator
		} else {
			b.WriteString(quoteIfSpace(p.Key))
		}
		if p.HasValue {
			b.WriteByte('=')
			b.WriteString(quoteIfSpace(p.Value))
		}
	}
	if len(c.Init) > 0 {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-- " + strings.Join(c.Init, " "))
	}
	return b.String()
}

// quoteIfSpace wraps s in double quotes when it contains whitespace.
func quoteIfSpace(s string) string {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return "\"" + s + "\""
		}
	}
	return s
}
