package router

import "sync"

// WakeQueue carries the router's wake requests to whoever wakes apps (the
// autoscaler reads it): Wake never blocks, and an app asked for by many
// held requests is handed over once until it is taken.
type WakeQueue struct {
	mu      sync.Mutex
	pending map[string]bool
	ready   chan struct{}
}

// NewWakeQueue returns an empty queue.
func NewWakeQueue() *WakeQueue {
	return &WakeQueue{pending: map[string]bool{}, ready: make(chan struct{}, 1)}
}

// Wake asks for an app to be woken.
func (q *WakeQueue) Wake(appKey string) {
	q.mu.Lock()
	q.pending[appKey] = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Ready receives when there may be apps to take.
func (q *WakeQueue) Ready() <-chan struct{} { return q.ready }

// Take returns the apps asked for since the last Take.
func (q *WakeQueue) Take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, 0, len(q.pending))
	for k := range q.pending {
		out = append(out, k)
		delete(q.pending, k)
	}
	return out
}
