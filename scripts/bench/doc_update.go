package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// loadLabel names the load a run was made under, in its results heading.
func loadLabel(hogs int) string {
	switch hogs {
	case 0:
		return "quiet"
	case 1:
		return "one CPU hog"
	case 2:
		return "two CPU hogs"
	}
	return fmt.Sprintf("%d CPU hogs", hogs)
}

// startHogs starts n `yes` processes writing to /dev/null and returns the
// function that kills them (by their PIDs) and reaps them; it is safe to
// call more than once.
func startHogs(n int) (func(), error) {
	var procs []*exec.Cmd
	stop := func() {
		for _, c := range procs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		procs = nil
	}
	for i := 0; i < n; i++ {
		c := exec.Command("yes")
		c.Stdout = nil // os/exec opens /dev/null
		if err := c.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("start CPU hog: %w", err)
		}
		procs = append(procs, c)
	}
	return stop, nil
}

var resultsHeadRE = regexp.MustCompile(`(?m)^## Results of [0-9-]+(?: \(([^)]*)\))?$`)

// replaceResults writes report into the markdown file: it replaces the
// "## Results of DATE (label)" section with the same label (a heading
// without a label counts as "quiet"), or adds it after the others. Text
// before the first results section (the method) is kept.
func replaceResults(path, label, report string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(data)
	heads := resultsHeadRE.FindAllStringSubmatchIndex(doc, -1)
	var out strings.Builder
	if len(heads) == 0 {
		out.WriteString(strings.TrimRight(doc, "\n") + "\n\n" + report)
		return os.WriteFile(path, []byte(out.String()), 0o644)
	}
	out.WriteString(doc[:heads[0][0]])
	placed := false
	for i, h := range heads {
		end := len(doc)
		if i+1 < len(heads) {
			end = heads[i+1][0]
		}
		l := "quiet"
		if h[2] >= 0 {
			l = doc[h[2]:h[3]]
		}
		if l == label {
			if !placed {
				out.WriteString(strings.TrimRight(report, "\n") + "\n\n")
				placed = true
			}
			continue
		}
		out.WriteString(strings.TrimRight(doc[h[0]:end], "\n") + "\n\n")
	}
	if !placed {
		out.WriteString(strings.TrimRight(report, "\n") + "\n")
	}
	return os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644)
}
