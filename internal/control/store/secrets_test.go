package store

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawDB is what a copy of the database file shows.
func rawDB(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT key, value FROM kv`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var k string
		var v []byte
		rows.Scan(&k, &v)
		b.WriteString(k + "=" + string(v) + "\n")
	}
	return b.String()
}

func TestSecretsSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	app := App{Name: "blog", Domain: "acme", Env: map[string]string{"API_KEY": "sk-live-SECRET1"},
		Cartridges: []Cartridge{{Name: "postgresql", Password: "pg-SECRET2"}},
		Drains:     []Drain{{ID: "d1", URL: "https://logs.example.com/in?token=SECRET4"}},
		Registry:   &RegistryLogin{Registry: "registry.example.com", Username: "ci", Password: "SECRET5"}}
	cert := Cert{Host: "www.example.com", CertPEM: "CERT", KeyPEM: "-----BEGIN PRIVATE KEY----- SECRET3"}
	if err := s.Update(func(tx *Tx) error {
		if err := tx.Put(app.Key(), &app); err != nil {
			return err
		}
		return tx.Put(CertKey(cert.Host), cert) // by value too
	}); err != nil {
		t.Fatal(err)
	}
	if app.Env["API_KEY"] != "sk-live-SECRET1" || app.Cartridges[0].Password != "pg-SECRET2" {
		t.Fatalf("Put changed the caller's record: %+v", app)
	}
	raw := rawDB(t, path)
	for _, secret := range []string{"SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"} {
		if strings.Contains(raw, secret) {
			t.Errorf("the database file holds %s in the clear", secret)
		}
	}
	if !strings.Contains(raw, "CERT") {
		t.Error("the certificate (not a secret) is not readable")
	}
	check := func(s *Store) {
		t.Helper()
		var a App
		var c Cert
		var list []App
		err := s.View(func(tx *Tx) error {
			if err := tx.Get(app.Key(), &a); err != nil {
				return err
			}
			if err := tx.Get(CertKey(cert.Host), &c); err != nil {
				return err
			}
			var err error
			list, err = List[App](tx, "apps/")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if a.Env["API_KEY"] != "sk-live-SECRET1" || a.Cartridges[0].Password != "pg-SECRET2" || c.KeyPEM != cert.KeyPEM || a.Drains[0].URL != app.Drains[0].URL || a.Registry.Password != "SECRET5" ||
			len(list) != 1 || list[0].Env["API_KEY"] != "sk-live-SECRET1" {
			t.Fatalf("read back: %+v %+v %+v", a, c, list)
		}
	}
	check(s)

	// Rotation: new key, everything resealed, the old key gone.
	before, _ := os.ReadFile(KeyFile(path))
	n, err := s.RotateKey()
	if err != nil || n != 2 {
		t.Fatalf("RotateKey: %d, %v; want 2 records", n, err)
	}
	after, _ := os.ReadFile(KeyFile(path))
	if string(before) == string(after) || strings.Count(string(after), "\n") != 2 {
		t.Fatalf("key file after rotation:\n%s", after)
	}
	if raw2 := rawDB(t, path); raw2 == raw || strings.Contains(raw2, sealPrefix+"1:") {
		t.Error("values still sealed with the old key after rotation")
	}
	check(s)
	s.Close()
	if fi, _ := os.Stat(KeyFile(path)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v; want 0600", fi.Mode().Perm())
	}

	// The database with its key opens; without it (a copy elsewhere), the
	// secrets do not.
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	check(s2)
	s2.Close()
	other := t.TempDir()
	copyFile(t, path, filepath.Join(other, "s.db"))
	s3, err := Open(filepath.Join(other, "s.db")) // a new, different key
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	var a App
	if err := s3.View(func(tx *Tx) error { return tx.Get(app.Key(), &a) }); err == nil || strings.Contains(a.Env["API_KEY"], "SECRET1") {
		t.Fatalf("a copy of the database without its key read %+v, %v", a, err)
	}
}

// Secrets written before sealing existed are sealed at the next start.
func TestPlainSecretsSealedAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.keys = nil // as an older Gantry wrote
	app := App{Name: "x", Domain: "d", Env: map[string]string{"K": "plain-SECRET"}}
	s.Update(func(tx *Tx) error { return tx.Put(app.Key(), &app) })
	s.Close()
	if !strings.Contains(rawDB(t, path), "plain-SECRET") {
		t.Fatal("setup: the value should be plain")
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(rawDB(t, path), "plain-SECRET") {
		t.Error("a plain secret is still in the clear after a start")
	}
	var a App
	s.View(func(tx *Tx) error { return tx.Get(app.Key(), &a) })
	if a.Env["K"] != "plain-SECRET" {
		t.Errorf("read back %q", a.Env["K"])
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(to, b, 0o600)
	for _, ext := range []string{"-wal", "-shm"} {
		if b, err := os.ReadFile(from + ext); err == nil {
			os.WriteFile(to+ext, b, 0o600)
		}
	}
}
