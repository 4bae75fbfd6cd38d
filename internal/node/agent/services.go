package agent

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/gantry-paas/gantry/internal/control/store"
)

// Service is something listening in a gear.
type Service struct {
	Name string `json:"name"` // web, postgresql, redis… or tcp-PORT
	Gear string `json:"gear"`
	IP   string `json:"ip"` // the gear's address: where forwards connect
	Port int    `json:"port"`
	// Local is true when the service listens only on the gear's loopback.
	Local bool `json:"local,omitempty"`
	// Cartridge is true for an add-on service's gear.
	Cartridge bool `json:"cartridge,omitempty"`
}

var wellKnown = map[int]string{5432: "postgresql", 6379: "redis", 3306: "mysql", 27017: "mongodb", 5672: "amqp", 11211: "memcached", 9229: "node-inspect"}

// Services lists what listens in the app's running gears (one gear if
// gearID is set): the web process, databases, anything the app opened.
func (a *Agent) Services(appKey, gearID string) ([]Service, error) {
	var gears []store.Gear
	err := a.o.Store.View(func(tx *store.Tx) error {
		all, err := store.ListGears(tx)
		for _, g := range all {
			if g.AppKey == appKey && g.State == store.GearRunning && (gearID == "" || g.ID == gearID) {
				gears = append(gears, g)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if gearID != "" && len(gears) == 0 {
		return nil, fmt.Errorf("the app has no running gear %s", gearID)
	}
	var out []Service
	for _, g := range gears {
		if a.remote(g) { // its machine lists them
			svcs, err := a.remoteServices(g)
			if err != nil {
				return nil, fmt.Errorf("gear %s on %s: %w", g.ID, g.Node, err)
			}
			out = append(out, svcs...)
			continue
		}
		socks, err := a.driverFor(g).Listening(g.ID)
		if err != nil {
			return nil, fmt.Errorf("gear %s: %w", g.ID, err)
		}
		seen := map[int]bool{}
		for _, s := range socks {
			port := s.Port
			if seen[port] {
				continue
			}
			seen[port] = true
			name := wellKnown[port]
			switch {
			case g.Service != "":
				name = g.Service
			case port == g.Port:
				name = "web"
			}
			if name == "" {
				name = "tcp-" + strconv.Itoa(port)
			}
			out = append(out, Service{Name: name, Gear: g.ID, IP: g.IP, Port: port, Local: s.Loopback, Cartridge: g.Service != ""})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Gear != out[j].Gear {
			return out[i].Gear < out[j].Gear
		}
		return out[i].Port < out[j].Port
	})
	return out, nil
}

// DialService connects to a service of one of the caller's gears: addr is
// GEARIP:PORT as Services lists it. It refuses anything else. A namespaced
// gear is dialled from inside its namespace, so services listening on the
// gear's loopback are reachable too.
func (a *Agent) DialService(user, addr string) (net.Conn, *Service, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%q is not HOST:PORT", addr)
	}
	port, _ := strconv.Atoi(portStr)
	var candidates []store.Gear
	a.o.Store.View(func(tx *store.Tx) error {
		gears, err := store.ListGears(tx)
		for _, g := range gears {
			if g.IP != host || g.State != store.GearRunning {
				continue
			}
			var app store.App
			if tx.Get(g.AppKey, &app) == nil && app.Owner == user {
				candidates = append(candidates, g)
			}
		}
		return err
	})
	for _, g := range candidates {
		svcs, err := a.cachedServices(g, port)
		if err != nil {
			continue
		}
		for _, s := range svcs {
			if s.Port != port {
				continue
			}
			target := net.JoinHostPort(g.IP, portStr)
			if s.Local && !isLoopback(g.IP) {
				// Only on the gear's loopback (a gear whose own address
				// is a loopback one, 127.0.20.3, is reached at it).
				target = net.JoinHostPort("127.0.0.1", portStr)
			}
			var conn net.Conn
			if a.remote(g) {
				conn, err = a.dialRemote(g, target)
			} else {
				conn, err = a.driverFor(g).Dial(g.ID, target)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("connecting to %s in gear %s: %w", s.Name, g.ID, err)
			}
			return conn, &s, nil
		}
	}
	return nil, nil, fmt.Errorf("%s is not a service of one of your gears: see `gantry port-forward APP` for what can be forwarded", addr)
}

type serviceCache struct {
	at   time.Time
	svcs []Service
}

// cachedServices lists a gear's services, from a cache younger than 2 s
// that has the port asked for (a miss always asks the kernel again, so a
// service that just started is never refused).
func (a *Agent) cachedServices(g store.Gear, port int) ([]Service, error) {
	a.svcMu.Lock()
	c, ok := a.svcCache[g.ID]
	a.svcMu.Unlock()
	if ok && time.Since(c.at) < 2*time.Second {
		for _, s := range c.svcs {
			if s.Port == port {
				return c.svcs, nil
			}
		}
	}
	svcs, err := a.Services(g.AppKey, g.ID)
	if err != nil {
		return nil, err
	}
	a.svcMu.Lock()
	if a.svcCache == nil || len(a.svcCache) > 10000 {
		a.svcCache = map[string]serviceCache{}
	}
	a.svcCache[g.ID] = serviceCache{at: time.Now(), svcs: svcs}
	a.svcMu.Unlock()
	return svcs, nil
}

func isLoopback(ip string) bool {
	a := net.ParseIP(ip)
	return a != nil && a.IsLoopback()
}
