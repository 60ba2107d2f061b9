package vmm

import (
	"testing"
	"time"
)

func TestVCPUStateString(t *testing.T) {
	for s, want := range map[vcpuState]string{
		phaseCreated:                       "created",
		phaseRunning | reqDump:             "running+dump",
		phaseParked | reqHold:              "parked+hold",
		phaseExited | reqStop | flagHalted: "exited+stop+halted",
	} {
		if got := s.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint32(s), got, want)
		}
	}
	if !(phaseParked | reqHold).mustPark() || (phaseParked | reqHold | reqStop).mustPark() {
		t.Error("mustPark: hold parks, stop overrides hold")
	}
}

// waitUntil wakes on a change, not by polling, and honours its deadline.
func TestControlWaitUntil(t *testing.T) {
	var c vcpuControl
	c.init()
	flag := false
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.mu.Lock()
		flag = true
		c.broadcastLocked()
		c.mu.Unlock()
	}()
	if !c.waitUntil(time.Now().Add(10*time.Second), func() bool { return flag }) {
		t.Fatal("waitUntil missed the change")
	}
	start := time.Now()
	if c.waitUntil(start.Add(30*time.Millisecond), func() bool { return false }) {
		t.Fatal("waitUntil reported an impossible condition")
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("waitUntil gave up after %v, before its deadline", d)
	}
}
