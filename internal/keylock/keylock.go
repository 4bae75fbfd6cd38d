// Package keylock serialises work per key (an app): Lock(key) blocks while
// another holder has the same key; different keys proceed in parallel.
package keylock

import "sync"

// Locks is a set of mutexes by key. The zero value is ready to use.
type Locks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

// Lock takes the key's lock and returns its release.
func (l *Locks) Lock(key string) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*sync.Mutex{}
	}
	m := l.m[key]
	if m == nil {
		m = &sync.Mutex{}
		l.m[key] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}
