package vmm

import "fmt"

// Outcome is why a machine stopped.
type Outcome int

const (
	OutcomeNone     Outcome = iota
	OutcomePowerOff         // the guest powered off (ACPI S5, or a tiny guest's exit port)
	OutcomeReboot           // the guest asked for a reset (0xcf9, i8042, ACPI reset)
	OutcomePanic            // the guest panicked, triple-faulted or crashed
	OutcomeHalted           // every vCPU halted with no interrupt source (tiny guests)
	OutcomeTimeout          // the watchdog fired
	OutcomeStopped          // stopped from the host (Stop, signal)
	OutcomeError            // the VMM could not continue (emulation failure, KVM error)
)

func (o Outcome) String() string {
	switch o {
	case OutcomeNone:
		return "running"
	case OutcomePowerOff:
		return "power-off"
	case OutcomeReboot:
		return "reboot"
	case OutcomePanic:
		return "panic"
	case OutcomeHalted:
		return "halted"
	case OutcomeTimeout:
		return "timeout"
	case OutcomeStopped:
		return "stopped"
	case OutcomeError:
		return "error"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// ExitCode is the documented process exit code for an outcome (README,
// "Exit codes"). Usage errors exit with 2 before a machine exists.
func (o Outcome) ExitCode() int {
	switch o {
	case OutcomePowerOff, OutcomeHalted:
		return 0
	case OutcomeReboot:
		return 3
	case OutcomePanic:
		return 4
	case OutcomeTimeout:
		return 5
	case OutcomeStopped:
		return 6
	}
	return 1
}

// Result is what Run returns when the machine stops.
type Result struct {
	Outcome Outcome
	// Code is the value a tiny guest wrote to the test-exit port.
	Code uint32
	// Detail says what happened ("triple fault on vcpu 0", "emulation failure ...").
	Detail string
	// Dump holds the vCPU state dumps taken when the machine stopped abnormally.
	Dump string
}
