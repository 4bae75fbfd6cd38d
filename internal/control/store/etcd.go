package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Etcd keeps the records in etcd under a key prefix: the store of a
// cluster, where every machine's control plane reads and writes the same
// records and watches the others' writes.
//
// A transaction reads one snapshot (the revision of its first read) and
// buffers its writes; an Update commits them in one etcd transaction on
// the condition that no other Update committed since it began (every
// write transaction also rewrites the key meta/rev, and the commit
// compares its modification revision). A conflict runs the function
// again after a short random back-off, within the store's wait, as etcd's
// own STM does. The store's revision is
// etcd's revision of the last write transaction.
type Etcd struct {
	c       *clientv3.Client
	prefix  string
	timeout time.Duration
}

const etcdRevKey = "meta/rev"

// NewEtcd returns a backend on c, keeping keys under prefix (e.g.
// "/gantry/").
func NewEtcd(c *clientv3.Client, prefix string) *Etcd {
	return &Etcd{c: c, prefix: prefix, timeout: DefaultWait}
}

func (e *Etcd) Close() error { return nil } // the client is the caller's

func (e *Etcd) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.timeout)
}

// head reads meta/rev: its modification revision (0: no write yet) and
// the revision of the snapshot the read saw.
func (e *Etcd) head() (mod, snapshot int64, err error) {
	ctx, cancel := e.ctx()
	defer cancel()
	resp, err := e.c.Get(ctx, e.prefix+etcdRevKey)
	if err != nil {
		return 0, 0, e.busy(err)
	}
	if len(resp.Kvs) > 0 {
		mod = resp.Kvs[0].ModRevision
	}
	return mod, resp.Header.Revision, nil
}

func etcdErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (etcd did not answer in time: %v)", ErrBusy, err)
	}
	return err
}

// UnavailableError is a store that cannot answer because too few of its
// members can be reached (the cluster lost its quorum). It is an ErrBusy.
type UnavailableError struct{ Reachable, Members int }

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("store unavailable: %d of %d members reachable; nothing was changed; routers keep serving and gears keep running; try again once the machines are back", e.Reachable, e.Members)
}

func (e *UnavailableError) Is(target error) bool { return target == ErrBusy }

// busy turns a timeout into an UnavailableError when members are out of
// reach (each asked for its status, at once, briefly).
func (e *Etcd) busy(err error) error {
	err = etcdErr(err)
	if !errors.Is(err, ErrBusy) {
		return err
	}
	// The members as this one knows them (no quorum needed), else the
	// client's endpoints.
	eps := e.c.Endpoints()
	mctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	if ml, merr := e.c.MemberList(mctx, clientv3.WithSerializable()); merr == nil && len(ml.Members) > 0 {
		eps = eps[:0:0]
		for _, m := range ml.Members {
			if len(m.ClientURLs) > 0 {
				eps = append(eps, m.ClientURLs[0])
			}
		}
	}
	cancel()
	res := make(chan bool, len(eps))
	for _, ep := range eps {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			_, serr := e.c.Status(ctx, ep)
			res <- serr == nil
		}()
	}
	up := 0
	for range eps {
		if <-res {
			up++
		}
	}
	if len(eps) > 1 && up <= len(eps)/2 {
		return &UnavailableError{Reachable: up, Members: len(eps)}
	}
	return err
}

func (e *Etcd) Rev() (int64, error) {
	mod, _, err := e.head()
	return mod, err
}

func (e *Etcd) View(fn func(KV) error) error {
	_, snap, err := e.head()
	if err != nil {
		return err
	}
	return fn(&etcdKV{e: e, rev: snap})
}

func (e *Etcd) Update(fn func(KV) error) (int64, error) {
	deadline := time.Now().Add(e.timeout)
	for try := 0; try == 0 || time.Now().Before(deadline); try++ {
		if try > 0 { // another writer won: back off a little, at random
			time.Sleep(time.Duration(1+rand.IntN(min(try, 20)*2)) * time.Millisecond)
		}
		mod, snap, err := e.head()
		if err != nil {
			return 0, err
		}
		kv := &etcdKV{e: e, rev: snap, writes: map[string][]byte{}}
		if err := fn(kv); err != nil {
			return 0, err
		}
		if len(kv.writes) == 0 {
			return 0, nil
		}
		ops := []clientv3.Op{clientv3.OpPut(e.prefix+etcdRevKey, "")}
		for k, v := range kv.writes {
			if v == nil {
				ops = append(ops, clientv3.OpDelete(e.prefix+k))
			} else {
				ops = append(ops, clientv3.OpPut(e.prefix+k, string(v)))
			}
		}
		ctx, cancel := e.ctx()
		resp, err := e.c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(e.prefix+etcdRevKey), "=", mod)).Then(ops...).Commit()
		cancel()
		if err != nil {
			return 0, e.busy(err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
	}
	return 0, fmt.Errorf("%w (other writers kept changing the records)", ErrBusy)
}

// Watch sends the store's revision after every write transaction after
// revision after, this machine's and the others', until ctx ends.
func (e *Etcd) Watch(ctx context.Context, after int64) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		defer close(out)
		for resp := range e.c.Watch(ctx, e.prefix+etcdRevKey, clientv3.WithRev(after+1)) {
			for _, ev := range resp.Events {
				select {
				case <-out:
				default:
				}
				out <- ev.Kv.ModRevision
			}
		}
	}()
	return out
}

// etcdKV reads the snapshot at rev and keeps its writes (nil: deleted)
// until the commit; reads see the transaction's own writes.
type etcdKV struct {
	e      *Etcd
	rev    int64
	writes map[string][]byte
}

func (t *etcdKV) Get(key string) ([]byte, error) {
	if v, ok := t.writes[key]; ok {
		if v == nil {
			return nil, ErrNotFound
		}
		return v, nil
	}
	ctx, cancel := t.e.ctx()
	defer cancel()
	resp, err := t.e.c.Get(ctx, t.e.prefix+key, clientv3.WithRev(t.rev))
	if err != nil {
		return nil, t.e.busy(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotFound
	}
	return resp.Kvs[0].Value, nil
}

func (t *etcdKV) Put(key string, value []byte) error {
	if t.writes == nil {
		return errors.New("read-only transaction")
	}
	t.writes[key] = append([]byte{}, value...)
	return nil
}

func (t *etcdKV) Delete(key string) error {
	if t.writes == nil {
		return errors.New("read-only transaction")
	}
	t.writes[key] = nil
	return nil
}

func (t *etcdKV) Scan(prefix string, fn func(key string, value []byte) error) error {
	ctx, cancel := t.e.ctx()
	defer cancel()
	resp, err := t.e.c.Get(ctx, t.e.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(t.rev))
	if err != nil {
		return t.e.busy(err)
	}
	recs := map[string][]byte{}
	for _, kv := range resp.Kvs {
		recs[strings.TrimPrefix(string(kv.Key), t.e.prefix)] = kv.Value
	}
	for k, v := range t.writes {
		if strings.HasPrefix(k, prefix) {
			if v == nil {
				delete(recs, k)
			} else {
				recs[k] = v
			}
		}
	}
	delete(recs, etcdRevKey)
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, recs[k]); err != nil {
			return err
		}
	}
	return nil
}
