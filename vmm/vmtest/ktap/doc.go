// Package ktap parses KTAP v1 and TAP (13/14) test output, as printed by the
// Linux kernel's KUnit framework on the console, into a tree of results.
//
// It owns turning raw console text into test results and nothing else: it
// knows no VMM, no guest and no testing.T.
//
// The input is what a serial console really carries, not clean KTAP
// (Documentation/dev-tools/ktap.rst in the kernel tree):
//
//   - lines may carry printk prefixes ("[    1.234567] ", "[T1] " caller
//     ids, "<6>" log levels) and CR line ends;
//   - other kernel messages are interleaved with the test output, at any
//     point and without the test's indentation;
//   - nested tests (KUnit suites, and parameterised cases inside them) open
//     with "KTAP version 1" and/or "# Subtest: NAME", are indented by four
//     spaces per level, and close with the parent-level "ok N NAME" line;
//   - the plan ("1..N") may be missing;
//   - a run may stop anywhere (kernel panic, watchdog): every test whose
//     result line never came is reported as crashed.
//
// Parse reads a whole console log; Parser takes lines one at a time and can
// report each result as it arrives (for live output). Neither fails on any
// input: problems become Errors on the affected test.
package ktap
