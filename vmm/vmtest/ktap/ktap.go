package ktap

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Status is the outcome of one test.
type Status int

const (
	// StatusCrashed: the test started (or was planned) but its result line
	// never came: the kernel crashed, hung or was stopped first.
	StatusCrashed Status = iota
	StatusPass
	StatusFail
	StatusSkip
	// StatusNoTests: a test group that announced subtests ran none, or the
	// input held no KTAP at all.
	StatusNoTests
)

func (s Status) String() string {
	switch s {
	case StatusCrashed:
		return "CRASHED"
	case StatusPass:
		return "PASSED"
	case StatusFail:
		return "FAILED"
	case StatusSkip:
		return "SKIPPED"
	case StatusNoTests:
		return "NO TESTS"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// OK reports whether the status counts as success (passed or skipped).
func (s Status) OK() bool { return s == StatusPass || s == StatusSkip }

// MarshalText makes statuses readable in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (s *Status) UnmarshalText(b []byte) error {
	for c := StatusCrashed; c <= StatusNoTests; c++ {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("ktap: unknown status %q", b)
}

// severity orders statuses for aggregation: a group is as bad as its worst
// subtest.
func (s Status) severity() int {
	switch s {
	case StatusSkip:
		return 0
	case StatusPass:
		return 1
	case StatusNoTests:
		return 2
	case StatusFail:
		return 3
	}
	return 4 // crashed
}

// Test is one node of the result tree: a test case (no Subtests), or a
// group such as a KUnit suite or a parameterised case.
type Test struct {
	Name   string `json:"name"`
	Number int    `json:"number,omitempty"` // from the result line; 0 without one
	Status Status `json:"status"`
	// Directive is the text after " # " on the result line ("SKIP reason",
	// "TODO ..."), if any.
	Directive string `json:"directive,omitempty"`
	// Plan is the announced number of subtests; -1 when no plan line came.
	Plan     int     `json:"plan"`
	Subtests []*Test `json:"subtests,omitempty"`
	// Log holds the diagnostic lines ("# ...") and any other console lines
	// that came before this test's result line (for a case, its failure
	// messages), without printk prefixes.
	Log []string `json:"log,omitempty"`
	// Errors are problems with the output itself: a missing result line, a
	// number out of sequence, fewer tests than planned.
	Errors []string `json:"errors,omitempty"`
	// Missing marks a placeholder for a planned test that never printed
	// anything (its Status is StatusCrashed).
	Missing bool `json:"missing,omitempty"`
	// Line is the 1-based input line of the result line (0 without one).
	Line int `json:"line,omitempty"`

	hasResult bool
}

// Find returns the descendant named by path (one name per level, e.g.
// "vmm_selftest", "vmm_selftest_arith"), or nil.
func (t *Test) Find(path ...string) *Test {
	cur := t
	for _, name := range path {
		var next *Test
		for _, s := range cur.Subtests {
			if s.Name == name {
				next = s
				break
			}
		}
		if next == nil {
			return nil
		}
		cur = next
	}
	return cur
}

// Walk calls fn for every descendant of t, parents before children, with
// the names from t's children down to the node.
func (t *Test) Walk(fn func(path []string, n *Test)) {
	var walk func(prefix []string, n *Test)
	walk = func(prefix []string, n *Test) {
		for _, s := range n.Subtests {
			p := append(append([]string(nil), prefix...), s.Name)
			fn(p, s)
			walk(p, s)
		}
	}
	walk(nil, t)
}

// Counts tallies test cases: the leaves of the tree (a group that ran no
// subtests counts as one, with its own status), plus output errors.
type Counts struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
	Crashed int `json:"crashed"`
	Errors  int `json:"errors"`
}

// Total is the number of test cases counted.
func (c Counts) Total() int { return c.Passed + c.Failed + c.Skipped + c.Crashed }

func (c Counts) String() string {
	s := fmt.Sprintf("Ran %d tests: passed: %d", c.Total(), c.Passed)
	if c.Failed > 0 {
		s += fmt.Sprintf(", failed: %d", c.Failed)
	}
	if c.Skipped > 0 {
		s += fmt.Sprintf(", skipped: %d", c.Skipped)
	}
	if c.Crashed > 0 {
		s += fmt.Sprintf(", crashed: %d", c.Crashed)
	}
	if c.Errors > 0 {
		s += fmt.Sprintf(", errors: %d", c.Errors)
	}
	return s
}

// Counts tallies t's leaves (t itself when it has no subtests).
func (t *Test) Counts() Counts {
	var c Counts
	var count func(n *Test)
	count = func(n *Test) {
		c.Errors += len(n.Errors)
		if len(n.Subtests) == 0 {
			switch n.Status {
			case StatusPass:
				c.Passed++
			case StatusSkip:
				c.Skipped++
			case StatusFail, StatusNoTests:
				c.Failed++
			default:
				c.Crashed++
			}
			return
		}
		for _, s := range n.Subtests {
			count(s)
		}
	}
	count(t)
	return c
}

// Result is a parsed run.
type Result struct {
	// Found is false when the input held no KTAP/TAP header at all.
	Found bool `json:"found"`
	// Version is the top-level header, e.g. "KTAP version 1".
	Version string `json:"version,omitempty"`
	// Root is the whole run: its Subtests are the top-level tests (KUnit
	// suites), its Plan the announced number of them.
	Root *Test `json:"root"`
	// Complete is true when every planned top-level result arrived (or,
	// without a plan, when nothing was left open).
	Complete bool `json:"complete"`
	// Crash is the first "Kernel panic" line seen before the run completed.
	Crash string `json:"crash,omitempty"`
	// ExecutorErrors are "kunit executor: ..." lines (bad filter_glob etc.).
	ExecutorErrors []string `json:"executor_errors,omitempty"`
	Summary        Counts   `json:"summary"`
	// Status is the run's overall status: StatusPass only when every test
	// passed or was skipped and the output was complete and well formed.
	Status Status `json:"status"`
}

// Suites returns the top-level tests (nil when nothing was found).
func (r *Result) Suites() []*Test { return r.Root.Subtests }

// Find is r.Root.Find.
func (r *Result) Find(path ...string) *Test { return r.Root.Find(path...) }

// JSON returns the result as indented JSON.
func (r *Result) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

var (
	// printk prefixes: "[    1.234567] ", optionally "[    T1] " or
	// "[    C0] " caller ids (CONFIG_PRINTK_CALLER), and "<6>" levels.
	reTimestamp = regexp.MustCompile(`^\[\s*\d+\.\d+\](\[\s*[CT]\d+\])? ?`)
	reLevel     = regexp.MustCompile(`^<\d>`)
	reVersion   = regexp.MustCompile(`^(K?TAP) version (\d+)\s*$`)
	reSubtest   = regexp.MustCompile(`^# Subtest: (.*)$`)
	rePlan      = regexp.MustCompile(`^1\.\.(\d+)\s*(#.*)?$`)
	reResult    = regexp.MustCompile(`^(ok|not ok)(?: (\d+))?(?: - | |$)(.*)$`)
	reExecutor  = regexp.MustCompile(`kunit executor: (.*)$`)
)

// Markers after which the console no longer carries test output
// (the ones kunit.py's parser stops at, plus the power-off message).
var endMarkers = []string{
	"List of all partitions:",
	"Kernel panic - not syncing: VFS:",
	"reboot: System halted",
	"reboot: Power down",
	"reboot: Restarting system",
}

// maxPlan bounds a believable plan: each planned test without a result
// becomes a placeholder node, so a corrupted "1..99999999999" must not.
const maxPlan = 1 << 16

// maxPlaceholders bounds the placeholder nodes of one run.
const maxPlaceholders = 1 << 17

// maxLogLines bounds the lines kept per test, so a guest that floods the
// console cannot make the parser hold unbounded memory per node.
const maxLogLines = 1000

// frame is an open test group.
type frame struct {
	t *Test
	// indent is the indentation of the group's own lines (header, plan,
	// subtests); -1 while unknown.
	indent int
	// parentIndent is the indentation of the group's result line.
	parentIndent int
	// fresh: opened by a version line that no "# Subtest" line has named yet.
	fresh bool
	// versioned: the group's "KTAP version" line was seen.
	versioned bool
	pending   []string
}

// Parser parses KTAP incrementally: feed it console lines with Line, then
// call Finish.
type Parser struct {
	// OnResult, if set, is called when a test's result line has been
	// parsed (leaves and groups), with the names from the top-level test
	// down. It is not called for crashed tests (see Finish).
	OnResult func(path []string, t *Test)
	// OnStart, if set, is called when a test group opens (a KUnit suite).
	OnStart func(path []string, t *Test)

	res     Result
	stack   []*frame
	started bool
	done    bool
	prefix  string // non-space text before the first version header
	lineNo  int
	partial string
	// placeholders counts the nodes made up for missing tests.
	placeholders int
}

// NewParser returns a parser for one run.
func NewParser() *Parser {
	return &Parser{res: Result{Root: &Test{Plan: -1}}}
}

// clean strips printk prefixes and CRs.
func clean(s string) string {
	s = strings.TrimRight(s, "\r\n")
	s = strings.ReplaceAll(s, "\r", "")
	s = reLevel.ReplaceAllString(s, "")
	s = reTimestamp.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "\t", "    ")
}

// Write feeds raw console bytes, split into lines at '\n' (a trailing
// partial line is kept for the next call and flushed by Finish). It never
// fails, so a Parser can sit behind an io.MultiWriter.
func (p *Parser) Write(b []byte) (int, error) {
	s := p.partial + string(b)
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		p.Line(s[:i])
		s = s[i+1:]
	}
	if len(s) > 64<<10 { // a console line that never ends: take it as is
		p.Line(s)
		s = ""
	}
	p.partial = s
	return len(b), nil
}

// Line feeds one console line (with or without its line end).
func (p *Parser) Line(raw string) {
	p.lineNo++
	if p.done {
		return
	}
	s := clean(raw)
	if !p.started {
		if m := reExecutor.FindStringSubmatch(s); m != nil {
			p.res.ExecutorErrors = append(p.res.ExecutorErrors, m[1])
			return
		}
		i := strings.Index(s, "TAP version ")
		if i < 0 {
			return
		}
		if i > 0 && s[i-1] == 'K' {
			i--
		}
		lead := s[:i]
		if strings.TrimSpace(lead) != "" {
			p.prefix = lead
			s = s[i:]
		}
		if !reVersion.MatchString(strings.TrimSpace(s)) {
			p.prefix = ""
			return
		}
		p.started = true
		p.res.Found = true
		p.res.Version = strings.TrimSpace(s)
		ind := indentOf(s)
		p.stack = []*frame{{t: p.res.Root, indent: ind, parentIndent: ind}}
		return
	}
	if p.prefix != "" {
		if rest, ok := strings.CutPrefix(s, p.prefix); ok {
			s = rest
		} else if strings.TrimSpace(s) != "" {
			// Not test output: keep it as context of the current test.
			p.addLog(s)
			return
		}
	}
	body := strings.TrimLeft(s, " ")
	ind := len(s) - len(body)
	body = strings.TrimRight(body, " ")
	if strings.Contains(body, "Kernel panic - not syncing") {
		// Nothing runs after a panic: whatever is open has crashed.
		p.res.Crash = body
		p.addLog(body)
		p.done = true
		return
	}
	for _, m := range endMarkers {
		if strings.Contains(body, m) {
			p.addLog(body)
			p.done = true
			return
		}
	}
	if m := reExecutor.FindStringSubmatch(body); m != nil {
		p.res.ExecutorErrors = append(p.res.ExecutorErrors, m[1])
	}
	switch {
	case reVersion.MatchString(body):
		p.header(ind, "", true)
	case reSubtest.MatchString(body):
		p.header(ind, strings.TrimSpace(reSubtest.FindStringSubmatch(body)[1]), false)
	case rePlan.MatchString(body):
		top := p.top()
		n, err := strconv.Atoi(rePlan.FindStringSubmatch(body)[1])
		if top.t.Plan >= 0 || len(top.t.Subtests) > 0 || err != nil || n > maxPlan {
			if err != nil || n > maxPlan {
				top.t.Errors = append(top.t.Errors, "implausible plan: "+body)
			}
			p.addLog(body)
			return
		}
		top.t.Plan = n
		if top.indent < 0 {
			top.indent = ind
		}
	case reResult.MatchString(body):
		p.result(ind, body)
	default:
		if body != "" {
			p.addLog(body)
		}
	}
	if p.rootDone() {
		p.done = true
	}
}

func indentOf(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }

func (p *Parser) top() *frame { return p.stack[len(p.stack)-1] }

// rootDone: the top-level plan is fulfilled and nothing is open.
func (p *Parser) rootDone() bool {
	r := p.res.Root
	return len(p.stack) == 1 && r.Plan >= 0 && len(r.Subtests) >= r.Plan
}

func (p *Parser) addLog(s string) {
	if !p.started {
		return
	}
	f := p.top()
	if len(f.pending) < maxLogLines {
		f.pending = append(f.pending, s)
	}
}

func (p *Parser) path() []string {
	var out []string
	for _, f := range p.stack[1:] {
		out = append(out, f.t.Name)
	}
	return out
}

// header handles "KTAP version N" (version=true) and "# Subtest: name".
func (p *Parser) header(ind int, name string, version bool) {
	top := p.top()
	// The second line of a two-line header names or confirms the group the
	// first line opened: 6.1 prints "KTAP version" then "# Subtest", newer
	// kernels the other way round.
	if len(p.stack) > 1 && len(top.t.Subtests) == 0 && top.t.Plan < 0 && top.indent == ind {
		if !version && top.fresh {
			top.t.Name = name
			top.fresh = false
			p.started2(top)
			return
		}
		if version && !top.versioned {
			top.versioned = true
			return
		}
	}
	// A header at or left of the open group's content (which has begun)
	// starts a sibling or an uncle: the groups in between never printed
	// their result line. Output without indentation (content at the same
	// column as the group's own result) nests instead.
	for len(p.stack) > 1 && ind <= top.indent && top.indent > top.parentIndent &&
		(ind < top.indent || top.t.Plan >= 0 || len(top.t.Subtests) > 0) {
		p.closeCrashed()
		top = p.top()
	}
	t := &Test{Name: name, Plan: -1}
	f := &frame{t: t, indent: ind, parentIndent: top.indent, fresh: version, versioned: version}
	t.Log = append(t.Log, top.pending...)
	top.pending = nil
	top.t.Subtests = append(top.t.Subtests, t)
	p.stack = append(p.stack, f)
	if !version {
		p.started2(f)
	}
}

func (p *Parser) started2(f *frame) {
	if p.OnStart != nil {
		p.OnStart(p.path(), f.t)
	}
}

// result handles an "ok"/"not ok" line at indentation ind.
func (p *Parser) result(ind int, body string) {
	m := reResult.FindStringSubmatch(body)
	num, _ := strconv.Atoi(m[2])
	name, directive := m[3], ""
	if i := strings.Index(name, " #"); i >= 0 {
		directive = strings.TrimSpace(name[i+2:])
		name = name[:i]
	} else if strings.HasPrefix(name, "#") {
		directive = strings.TrimSpace(name[1:])
		name = ""
	}
	name = strings.TrimSpace(name)
	status := StatusFail
	if m[1] == "ok" {
		status = StatusPass
	}
	d := strings.ToUpper(directive)
	switch {
	case strings.HasPrefix(d, "SKIP"):
		status = StatusSkip
	case strings.HasPrefix(d, "TODO"):
		// TAP: a failing TODO test is not a failure.
		if status == StatusFail {
			status = StatusSkip
		}
	}

	// A line shallower than the top group's result level belongs further
	// up: the groups in between never printed their result line.
	for len(p.stack) > 1 && ind < p.top().parentIndent {
		p.closeCrashed()
	}
	top := p.top()
	closes := false
	if len(p.stack) > 1 {
		switch {
		case top.indent >= 0 && ind < top.indent:
			closes = true
		case top.indent >= 0 && ind > top.indent:
			closes = false
		case top.t.Plan >= 0:
			closes = len(top.t.Subtests) >= top.t.Plan
		default:
			// Flat output without a plan: only the name can tell.
			closes = name == top.t.Name && name != ""
		}
	}
	if closes {
		t := top.t
		if t.Name == "" {
			t.Name = name
		} else if name != t.Name {
			t.Errors = append(t.Errors, fmt.Sprintf("result line names %q, expected %q", name, t.Name))
		}
		p.finishGroup(top, status, directive, num)
		p.stack = p.stack[:len(p.stack)-1]
		p.checkNumber(p.top().t, t, num)
		if p.OnResult != nil {
			p.OnResult(append(p.path(), t.Name), t)
		}
		return
	}
	t := &Test{Name: name, Number: num, Status: status, Directive: directive, Plan: -1, Line: p.lineNo, hasResult: true}
	t.Log = top.pending
	top.pending = nil
	top.t.Subtests = append(top.t.Subtests, t)
	p.checkNumber(top.t, t, num)
	if top.indent < 0 {
		top.indent = ind
	}
	if p.OnResult != nil {
		p.OnResult(append(p.path(), name), t)
	}
}

// checkNumber records a test number out of sequence.
func (p *Parser) checkNumber(parent, t *Test, num int) {
	want := 0
	for i, s := range parent.Subtests {
		if s == t {
			want = i + 1
		}
	}
	if num != want {
		t.Errors = append(t.Errors, fmt.Sprintf("test number %d, expected %d", num, want))
	}
}

// finishGroup sets a closing group's status from its own result (or
// StatusCrashed without one) and its subtests, adding placeholders for
// planned tests that never appeared.
func (p *Parser) finishGroup(f *frame, own Status, directive string, num int) {
	t := f.t
	t.Log = append(t.Log, f.pending...)
	f.pending = nil
	if num > 0 || own != StatusCrashed {
		t.hasResult = true
		t.Number = num
		t.Directive = directive
		t.Line = p.lineNo
	}
	if t.Plan > len(t.Subtests) {
		t.Errors = append(t.Errors, fmt.Sprintf("planned %d tests, saw %d", t.Plan, len(t.Subtests)))
		for i := len(t.Subtests) + 1; i <= t.Plan; i++ {
			if p.placeholders >= maxPlaceholders {
				t.Errors = append(t.Errors, fmt.Sprintf("tests %d..%d not listed (too many missing tests)", i, t.Plan))
				break
			}
			p.placeholders++
			t.Subtests = append(t.Subtests, &Test{Name: fmt.Sprintf("#%d", i), Number: i, Status: StatusCrashed, Plan: -1, Missing: true})
		}
	}
	st := own
	if len(t.Subtests) == 0 {
		if own == StatusPass {
			st = StatusNoTests
			t.Errors = append(t.Errors, "0 tests run")
		}
	}
	for _, s := range t.Subtests {
		agg := s.Status
		if agg == StatusNoTests {
			agg = StatusFail
		}
		if agg.severity() > st.severity() {
			st = agg
		}
	}
	t.Status = st
}

// closeCrashed closes the top group without a result line.
func (p *Parser) closeCrashed() {
	f := p.top()
	f.t.Errors = append(f.t.Errors, "missing result line")
	p.finishGroup(f, StatusCrashed, "", 0)
	f.t.Status = StatusCrashed
	p.stack = p.stack[:len(p.stack)-1]
}

// Finish closes the run: groups still open are crashed, planned but
// missing tests are added as crashed placeholders, and the summary is
// computed. The Parser must not be used afterwards.
func (p *Parser) Finish() *Result {
	if p.partial != "" {
		s := p.partial
		p.partial = ""
		p.Line(s)
	}
	r := &p.res
	if !p.started {
		r.Root.Status = StatusNoTests
		r.Root.Errors = append(r.Root.Errors, "no KTAP output found")
		r.Status = StatusNoTests
		r.Summary = summary(r.Root)
		return r
	}
	complete := len(p.stack) == 1
	for len(p.stack) > 1 {
		p.closeCrashed()
	}
	root := p.stack[0]
	root.t.Log = append(root.t.Log, root.pending...)
	root.pending = nil
	if root.t.Plan > len(root.t.Subtests) {
		complete = false
	}
	p.finishGroup(root, StatusPass, "", 0)
	if root.t.Plan == 0 && len(root.t.Subtests) == 0 {
		// "1..0": nothing selected; not an error of the output.
		root.t.Errors = nil
		root.t.Status = StatusNoTests
	}
	r.Complete = complete
	r.Summary = summary(r.Root)
	r.Status = r.Root.Status
	if r.Status.OK() && (r.Summary.Errors > 0 || len(r.ExecutorErrors) > 0) {
		r.Status = StatusFail
	}
	return r
}

// summary counts the tests under root (not root itself) and every error.
func summary(root *Test) Counts {
	c := Counts{Errors: len(root.Errors)}
	for _, s := range root.Subtests {
		sc := s.Counts()
		c.Passed += sc.Passed
		c.Failed += sc.Failed
		c.Skipped += sc.Skipped
		c.Crashed += sc.Crashed
		c.Errors += sc.Errors
	}
	return c
}

// Parse reads console output from r until EOF and parses it. The error is
// only ever the reader's.
func Parse(r io.Reader) (*Result, error) {
	p := NewParser()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			p.Line(line)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return p.Finish(), fmt.Errorf("ktap: read: %w", err)
		}
	}
	return p.Finish(), nil
}

// ParseString parses console output held in a string.
func ParseString(s string) *Result {
	r, _ := Parse(strings.NewReader(s))
	return r
}
