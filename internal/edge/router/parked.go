package router

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The shared poller holds the quiet halves of tunnels: one epoll instance
// and one goroutine for all of them, so that an idle WebSocket costs no
// goroutine stack. A parked half's socket is registered one-shot; when it
// becomes readable (or ends) the half runs again in a new goroutine. Once
// a second the poller ends the tunnels that idled past their timeout.
// Without epoll (or if it fails) halves are not parked: they wait in the
// netpoller as before.

var parking poller

type poller struct {
	once   sync.Once
	epfd   int // -1: parking off
	mu     sync.Mutex
	nextID uint32
	halves map[uint32]*half
}

func (p *poller) start() {
	p.once.Do(func() {
		p.halves = map[uint32]*half{}
		fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			p.epfd = -1
			return
		}
		p.epfd = fd
		go p.loop()
	})
}

// park registers h's source with the poller; false: not parked (the
// tunnel ended, or the socket could not be registered), h goes on.
func (p *poller) park(h *half) bool {
	p.start()
	if p.epfd < 0 {
		return false
	}
	p.mu.Lock()
	if h.t.ended {
		p.mu.Unlock()
		return false
	}
	p.nextID++
	if p.nextID == 0 {
		p.nextID++
	}
	id := p.nextID
	h.id = id
	p.halves[id] = h // before the registration: its event finds it
	p.mu.Unlock()
	// From here h may run again elsewhere: only id is ours.
	var regErr error
	err := h.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id)}
		regErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		if regErr == nil {
			return
		}
		// Registered before and fired since: re-arm it.
		regErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if err == nil && regErr == nil {
		return true
	}
	p.mu.Lock()
	still := p.take(h)
	p.mu.Unlock()
	// An event cannot have claimed it (not registered): h goes on
	// unless the tunnel's end claimed it.
	return !still
}

// take removes a parked half; false if someone else took it.
func (p *poller) take(h *half) bool {
	if h.id == 0 {
		return false
	}
	if _, ok := p.halves[h.id]; !ok {
		return false
	}
	delete(p.halves, h.id)
	h.id = 0
	return true
}

// ended marks t ended and returns its parked halves, now the caller's to
// finish.
func (p *poller) ended(t *tunnel) []*half {
	p.mu.Lock()
	defer p.mu.Unlock()
	t.ended = true
	var hs []*half
	for i := range t.halves {
		if h := &t.halves[i]; p.take(h) {
			hs = append(hs, h)
		}
	}
	return hs
}

func (p *poller) loop() {
	events := make([]unix.EpollEvent, 256)
	sweep := time.Now()
	for {
		n, err := unix.EpollWait(p.epfd, events, 1000)
		if err != nil && err != unix.EINTR {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		var wake []*half
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if h := p.halves[uint32(ev.Fd)]; h != nil && p.take(h) {
				wake = append(wake, h)
			}
		}
		p.mu.Unlock()
		for _, h := range wake {
			go h.run()
		}
		if time.Since(sweep) >= time.Second {
			sweep = time.Now()
			p.sweep()
		}
	}
}

// sweep ends the tunnels of parked halves that idled past their timeout.
func (p *poller) sweep() {
	var idle []*tunnel
	p.mu.Lock()
	for _, h := range p.halves {
		if h.t.idleFor() >= h.t.idle {
			idle = append(idle, h.t)
		}
	}
	p.mu.Unlock()
	for _, t := range idle {
		t.end()
	}
}
