// Package guestlog is the one way this module logs events a guest can
// trigger (a malformed virtqueue chain, a refused conversion, an unknown
// device register, a failing interrupt line): every such line goes through
// a Limiter, so a misbehaving guest cannot flood the VMM's log, and what
// was held back is counted and reported with the next line that gets out
// (field "suppressed"). It also provides the discarding logger that
// libraries use when their caller gives them none.
//
// Dependency rule: this package imports only logrus and the standard
// library. kvm and memory are leaves of the module's import graph, and
// virtio and firmware import only memory; all of them may import guestlog
// without gaining a dependency on another package of this module. Keep it
// that way: nothing from github.com/vmmgo/vmm may be imported here.
package guestlog

import (
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Discard returns a logger that drops everything: what a library logs to
// when its caller gave it no logger.
func Discard() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// OrDiscard returns log, or Discard() when log is nil.
func OrDiscard(log *logrus.Entry) *logrus.Entry {
	if log == nil {
		return Discard()
	}
	return log
}

// Limiter lets through at most Burst events per Interval and counts the
// rest. The zero value is ready: one event a second. It is safe for
// concurrent use.
type Limiter struct {
	Interval time.Duration // window length; 0 means one second
	Burst    int           // events let through per window; 0 means 1

	mu         sync.Mutex
	start      time.Time // beginning of the current window
	used       int       // events let through in this window
	suppressed uint64    // events held back since the last one let through
}

// Allow reports whether an event may be logged now and, when it may, how
// many events were held back since the last one that was.
func (l *Limiter) Allow() (ok bool, suppressed uint64) {
	iv, burst := l.Interval, l.Burst
	if iv <= 0 {
		iv = time.Second
	}
	if burst <= 0 {
		burst = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.start.IsZero() || now.Sub(l.start) >= iv {
		l.start, l.used = now, 0
	}
	if l.used >= burst {
		l.suppressed++
		return false, 0
	}
	l.used++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// Suppressed adds the "suppressed" field to e when n > 0.
func Suppressed(e *logrus.Entry, n uint64) *logrus.Entry {
	if n > 0 {
		return e.WithField("suppressed", n)
	}
	return e
}

// Warn logs msg with err at warning level through l.
func (l *Limiter) Warn(e *logrus.Entry, err error, msg string) {
	if ok, n := l.Allow(); ok {
		Suppressed(e, n).WithError(err).Warn(msg)
	}
}

// Warnf logs at warning level through l.
func (l *Limiter) Warnf(e *logrus.Entry, format string, args ...any) {
	if ok, n := l.Allow(); ok {
		Suppressed(e, n).Warnf(format, args...)
	}
}

// Logger is a Limiter bound to one device's logger.
type Logger struct {
	Limiter
	log *logrus.Entry
}

// New returns a Logger for one device (nil log: discard), one line a
// second.
func New(log *logrus.Entry, device string) *Logger {
	return &Logger{log: OrDiscard(log).WithField("device", device)}
}

// Warnf logs at warning level, rate-limited.
func (g *Logger) Warnf(format string, args ...any) { g.Limiter.Warnf(g.log, format, args...) }

// Warn logs msg with err at warning level, rate-limited.
func (g *Logger) Warn(err error, msg string) { g.Limiter.Warn(g.log, err, msg) }
