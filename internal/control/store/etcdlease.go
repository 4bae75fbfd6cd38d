package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Presence and leadership on etcd: a key under a lease that this process
// renews; etcd deletes it when the renewals stop for the lease's time to
// live. Neither touches meta/rev: a heartbeat is not a change of the
// records, and the store's watchers do not wake for it.

// side is where these keys live: beside the records' prefix, never
// under it, so that no scan of the records meets them.
func (e *Etcd) side(kind string) string { return strings.TrimSuffix(e.prefix, "/") + "." + kind + "/" }

func ttlSeconds(ttl time.Duration) int64 { return max(int64((ttl+time.Second-1)/time.Second), 2) }

// lease is a granted lease kept alive, with a fence: valid reports false
// as soon as no renewal has been confirmed for half the time to live, so
// that a process cut off from etcd stops relying on it well before etcd
// expires the lease and another process can take over.
type lease struct {
	id   clientv3.LeaseID
	ttl  time.Duration
	lost chan struct{} // closed when the lease is gone or fenced
}

func (e *Etcd) grant(ctx context.Context, ttl time.Duration) (*lease, error) {
	gctx, cancel := e.ctx()
	g, err := e.c.Grant(gctx, ttlSeconds(ttl))
	cancel()
	if err != nil {
		return nil, etcdErr(err)
	}
	l := &lease{id: g.ID, ttl: time.Duration(ttlSeconds(ttl)) * time.Second, lost: make(chan struct{})}
	// Renewals are sent here, each a round trip, often (a sixth of the
	// time to live): the fence counts from the moment the last confirmed
	// renewal was sent, which is before etcd's own count began.
	go func() {
		defer close(l.lost)
		defer func() {
			if ctx.Err() != nil { // stopping: others need not wait out the lease
				rctx, cancel := context.WithTimeout(context.Background(), time.Second)
				e.c.Revoke(rctx, l.id)
				cancel()
			}
		}()
		confirmed := time.Now()
		tick := time.NewTicker(l.ttl / 6)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sent := time.Now()
			kctx, cancel := context.WithTimeout(ctx, l.ttl/3)
			_, err := e.c.KeepAliveOnce(kctx, l.id)
			cancel()
			switch {
			case err == nil:
				confirmed = sent
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return // expired already
			}
			if time.Since(confirmed) > l.ttl/2 {
				return
			}
		}
	}()
	return l, nil
}

func (e *Etcd) keepAlive(ctx context.Context, name string, ttl time.Duration, lost func(error)) error {
	announce := func() (*lease, error) {
		l, err := e.grant(ctx, ttl)
		if err != nil {
			return nil, err
		}
		pctx, cancel := e.ctx()
		_, err = e.c.Put(pctx, e.side("live")+name, time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(l.id))
		cancel()
		if err != nil {
			return nil, etcdErr(err)
		}
		return l, nil
	}
	l, err := announce()
	if err != nil {
		return fmt.Errorf("announcing %s: %w", name, err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.lost:
			}
			if ctx.Err() != nil {
				return
			}
			lost(fmt.Errorf("the store did not confirm %s's presence for %s", name, l.ttl/2))
			for {
				if l, err = announce(); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}

func (e *Etcd) live() (map[string]bool, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.side("live"), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, etcdErr(err)
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return trimPrefix(keys, e.side("live")), nil
}

func (e *Etcd) lead(ctx context.Context, role, id string, ttl time.Duration, act func(ctx context.Context)) error {
	for ctx.Err() == nil {
		l, err := e.grant(ctx, ttl)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		sess, err := concurrency.NewSession(e.c, concurrency.WithLease(l.id), concurrency.WithContext(ctx))
		if err != nil {
			continue
		}
		el := concurrency.NewElection(sess, e.side("leader")+role)
		cctx, cancel := context.WithCancel(ctx)
		go func() { // a lapsed lease ends the campaign too
			select {
			case <-l.lost:
			case <-sess.Done():
			case <-cctx.Done():
			}
			cancel()
		}()
		if err := el.Campaign(cctx, id); err == nil {
			act(cctx)
			rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
			el.Resign(rctx)
			rcancel()
		}
		cancel()
		sess.Close()
	}
	return nil
}

func (e *Etcd) leaderOf(role string) (string, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.side("leader")+role+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", etcdErr(err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// lock is an etcd mutex under a session of its own: a holder that dies
// frees it when its lease lapses.
func (e *Etcd) lock(ctx context.Context, name string) (func(), error) {
	sess, err := concurrency.NewSession(e.c, concurrency.WithTTL(10), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, etcdErr(err)
	}
	m := concurrency.NewMutex(sess, e.side("lock")+name)
	if err := m.Lock(ctx); err != nil {
		sess.Close()
		return nil, etcdErr(err)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m.Unlock(uctx)
		cancel()
		sess.Close()
	}, nil
}

func (e *Etcd) report(name string, raw []byte) error {
	ctx, cancel := e.ctx()
	defer cancel()
	_, err := e.c.Put(ctx, e.side("report")+name, string(raw))
	return etcdErr(err)
}

func (e *Etcd) reports() (map[string][]byte, error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.side("report"), clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), e.side("report"))] = kv.Value
	}
	return out, nil
}
