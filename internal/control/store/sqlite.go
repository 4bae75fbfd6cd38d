package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite is the single-machine backend: one table of keys and values, one
// counter, one connection (the control plane's writes are few, and a
// single writer keeps SQLite free of busy errors).
type SQLite struct {
	db *sql.DB
	// wait bounds how long a transaction waits for the database; past it,
	// ErrBusy.
	wait time.Duration
	// get and scan are prepared once: parsing the SQL of every read was a
	// sixth of an apps list's time. (One connection: a transaction uses
	// them as they are.)
	get, scan *sql.Stmt
}

// OpenSQLite opens (creating if needed) the database at path.
func OpenSQLite(path string, wait time.Duration) (*SQLite, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{
		`CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, rev INTEGER NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)`,
		`INSERT OR IGNORE INTO meta (name, value) VALUES ('rev', 0)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			db.Close()
			return nil, fmt.Errorf("initialising store %s: %w", path, err)
		}
	}
	b := &SQLite{db: db, wait: wait}
	if b.get, err = db.Prepare(`SELECT value FROM kv WHERE key = ?`); err == nil {
		b.scan, err = db.Prepare(`SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key`)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing store %s: %w", path, err)
	}
	return b, nil
}

func (b *SQLite) Close() error { return b.db.Close() }

// Checkpoint writes the write-ahead log into the database file and
// empties it.
func (b *SQLite) Checkpoint() error {
	_, err := b.db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
	return err
}

func (b *SQLite) Rev() (int64, error) {
	var rev int64
	err := b.db.QueryRow(`SELECT value FROM meta WHERE name='rev'`).Scan(&rev)
	return rev, err
}

func (b *SQLite) View(fn func(KV) error) error {
	tx, release, err := b.begin("read")
	if err != nil {
		return err
	}
	defer release()
	defer tx.Rollback()
	return fn(&sqliteKV{tx: tx, b: b})
}

func (b *SQLite) Update(fn func(KV) error) (int64, error) {
	tx, release, err := b.begin("write")
	if err != nil {
		return 0, err
	}
	defer release()
	defer tx.Rollback()
	kv := &sqliteKV{tx: tx, b: b}
	if err := fn(kv); err != nil {
		return 0, err
	}
	if !kv.wrote {
		return 0, nil
	}
	var rev int64
	if err := tx.QueryRow(`UPDATE meta SET value = value + 1 WHERE name='rev' RETURNING value`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("bumping revision: %w", busy(err))
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("committing: %w", busy(err))
	}
	return rev, nil
}

type sqliteKV struct {
	tx    *sql.Tx
	b     *SQLite
	wrote bool
}

func (t *sqliteKV) Get(key string) ([]byte, error) {
	var raw []byte
	err := t.tx.Stmt(t.b.get).QueryRow(key).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return raw, err
}

func (t *sqliteKV) Put(key string, value []byte) error {
	_, err := t.tx.Exec(`INSERT INTO kv (key, value, rev) VALUES (?, ?, (SELECT value FROM meta WHERE name='rev') + 1)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev`, key, value)
	t.wrote = t.wrote || err == nil
	return err
}

func (t *sqliteKV) Delete(key string) error {
	_, err := t.tx.Exec(`DELETE FROM kv WHERE key = ?`, key)
	t.wrote = t.wrote || err == nil
	return err
}

func (t *sqliteKV) Scan(prefix string, fn func(key string, value []byte) error) error {
	rows, err := t.tx.Stmt(t.b.scan).Query(prefix, prefixEnd(prefix))
	if err != nil {
		return fmt.Errorf("listing %s: %w", prefix, err)
	}
	type kv struct {
		k string
		v []byte
	}
	var all []kv
	for rows.Next() {
		var e kv
		if err := rows.Scan(&e.k, &e.v); err != nil {
			rows.Close()
			return fmt.Errorf("listing %s: %w", prefix, err)
		}
		all = append(all, e)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("listing %s: %w", prefix, err)
	}
	for _, e := range all {
		if err := fn(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

func prefixEnd(prefix string) string {
	if prefix == "" {
		return "\xff"
	}
	return prefix + "\xff"
}

// begin starts a transaction on the one connection, waiting for it at
// most b.wait; the returned release gives the connection back.
func (b *SQLite) begin(what string) (*sql.Tx, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.wait)
	defer cancel()
	conn, err := b.db.Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("starting %s: waited %v for the database: %w", what, b.wait, ErrBusy)
		}
		return nil, nil, fmt.Errorf("starting %s: %w", what, busy(err))
	}
	tx, err := conn.BeginTx(context.Background(), nil)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", what, busy(err))
	}
	return tx, func() { conn.Close() }, nil
}

// busy turns SQLite's "database is locked" (SQLITE_BUSY, after the busy
// timeout) and SQLITE_LOCKED into ErrBusy.
func busy(err error) error {
	var c interface{ Code() int }
	if errors.As(err, &c) && (c.Code()&0xff == 5 || c.Code()&0xff == 6) {
		return fmt.Errorf("%w (%v)", ErrBusy, err)
	}
	return err
}
