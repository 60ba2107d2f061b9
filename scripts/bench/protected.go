package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// protectedStats is what one protected boot (--private-memory) reported at
// "Run /init": the VMM's page states and conversions (its SIGUSR1 memory
// report) and the guest kernel's own count of its boot conversions (the
// vmmgo patch prints it before init).
type protectedStats struct {
	shared, private uint64        // pages, the VMM's view
	requests        uint64        // conversion requests the VMM served
	refused         uint64        // of which refused
	deviceRefused   uint64        // device accesses refused (private page)
	vmmTime         time.Duration // spent converting in the VMM
	guestCalls      uint64        // set_memory_{de,en}crypted calls in the guest
	guestExits      uint64        // requests the guest sent
	guestTime       time.Duration // as the guest measured it (exits included)
}

func (p protectedStats) privatePct() float64 {
	if p.shared+p.private == 0 {
		return 0
	}
	return 100 * float64(p.private) / float64(p.shared+p.private)
}

func (p protectedStats) String() string {
	return fmt.Sprintf("shared %d, private %d pages (%.1f %% private); %d conversion requests (%d refused) taking %v in the VMM; device accesses refused %d; guest: %d set_memory calls, %d requests, %v",
		p.shared, p.private, p.privatePct(), p.requests, p.refused, p.vmmTime, p.deviceRefused, p.guestCalls, p.guestExits, p.guestTime)
}

var (
	memLineRE  = regexp.MustCompile(`guest memory: .*, shared (\d+) pages, private (\d+) pages`)
	convLineRE = regexp.MustCompile(`conversions: to-private \d+, to-shared \d+, pages converted \d+, refused \d+, device accesses refused (\d+)`)
	viaRE      = regexp.MustCompile(`conversions via [^:]+: (\d+) requests \((\d+) refused\), \d+ pages changed, (\S+)`)
	guestRE    = regexp.MustCompile(`vmmgo: boot conversions: (\d+) set_memory calls, (\d+) requests to the VMM, \d+ pages shared, \d+ made private, \d+ failed, (\d+) us`)
)

// parseProtected reads a protected boot's console (stdout) and VMM log and
// state dump (stderr).
func parseProtected(stdout, stderr []byte) (protectedStats, error) {
	var p protectedStats
	m := memLineRE.FindSubmatch(stderr)
	c := convLineRE.FindSubmatch(stderr)
	if m == nil || c == nil {
		return p, errors.New("no memory report from the VMM (SIGUSR1 state dump) before it was stopped")
	}
	p.shared, _ = strconv.ParseUint(string(m[1]), 10, 64)
	p.private, _ = strconv.ParseUint(string(m[2]), 10, 64)
	p.deviceRefused, _ = strconv.ParseUint(string(c[1]), 10, 64)
	for _, v := range viaRE.FindAllSubmatch(stderr, -1) {
		n, _ := strconv.ParseUint(string(v[1]), 10, 64)
		r, _ := strconv.ParseUint(string(v[2]), 10, 64)
		d, err := time.ParseDuration(string(v[3]))
		if err != nil {
			return p, fmt.Errorf("conversion time %q: %v", v[3], err)
		}
		p.requests += n
		p.refused += r
		p.vmmTime += d
	}
	if g := guestRE.FindSubmatch(stdout); g != nil {
		p.guestCalls, _ = strconv.ParseUint(string(g[1]), 10, 64)
		p.guestExits, _ = strconv.ParseUint(string(g[2]), 10, 64)
		us, _ := strconv.ParseUint(string(g[3]), 10, 64)
		p.guestTime = time.Duration(us) * time.Microsecond
	} else {
		return p, errors.New("the guest kernel printed no \"vmmgo: boot conversions\" report (not the protected-guest kernel?)")
	}
	return p, nil
}
