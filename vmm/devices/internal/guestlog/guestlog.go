// Package guestlog rate-limits log lines that a guest can trigger.
package guestlog

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Logger logs guest-triggered events (unknown registers, odd accesses) at
// most once per interval and counts what it suppressed, so a misbehaving
// guest cannot flood the VMM's log.
type Logger struct {
	mu         sync.Mutex
	log        *logrus.Entry
	interval   time.Duration
	next       time.Time
	suppressed uint64
}

// New returns a Logger for one device (nil log: discard).
func New(log *logrus.Entry, device string) *Logger {
	if log == nil {
		l := logrus.New()
		l.Out = io.Discard
		log = logrus.NewEntry(l)
	}
	return &Logger{log: log.WithField("device", device), interval: time.Second}
}

// Warnf logs at warning level, at most once a second.
func (g *Logger) Warnf(format string, args ...any) {
	g.mu.Lock()
	now := time.Now()
	if now.Before(g.next) {
		g.suppressed++
		g.mu.Unlock()
		return
	}
	n := g.suppressed
	g.suppressed = 0
	g.next = now.Add(g.interval)
	g.mu.Unlock()
	e := g.log
	if n > 0 {
		e = e.WithField("suppressed", n)
	}
	e.Warnf(format, args...)
}
