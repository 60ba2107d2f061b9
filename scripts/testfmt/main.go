// Command testfmt reads `go test -json` on stdin. By default it prints the
// ordinary `go test` text output as it arrives; with -summary it prints only
// the closing line "N passed, N failed, N skipped" over all test cases
// (subtests included).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	summary := flag.Bool("summary", false, "print only the pass/fail/skip counts")
	flag.Parse()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	var pass, fail, skip int
	for in.Scan() {
		var e event
		if err := json.Unmarshal(in.Bytes(), &e); err != nil {
			if !*summary {
				fmt.Println(in.Text()) // not JSON: a build error line
			}
			continue
		}
		if e.Action == "output" && !*summary {
			fmt.Print(e.Output)
		}
		if e.Test == "" {
			continue
		}
		switch e.Action {
		case "pass":
			pass++
		case "fail":
			fail++
		case "skip":
			skip++
		}
	}
	if *summary {
		fmt.Printf("%d passed, %d failed, %d skipped\n", pass, fail, skip)
	}
}
