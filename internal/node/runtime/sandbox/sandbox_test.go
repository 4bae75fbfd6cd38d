package sandbox

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestOCIIsLockedDown(t *testing.T) {
	s := OCI(Spec{ID: "g1", Args: []string{"/bin/sh"}, UID: 200001, GID: 200001, Hostname: "blog-acme",
		NetnsPath: "/run/netns/gantry-g1", CgroupParent: "gantry/g1",
		Mounts: []Mount{{Path: "/var/lib/gantry/apps/a/data"}, {Path: "/var/lib/gantry/apps/a/logs", ReadOnly: true}}})
	if s.Version != "1.0.2" {
		t.Errorf("version %q: runc 1.1 needs 1.0.2", s.Version)
	}
	p := s.Process
	if p.User.UID != 200001 || p.User.GID != 200001 || !p.NoNewPrivileges {
		t.Errorf("process user/privileges: %+v", p)
	}
	c := p.Capabilities
	if c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities: %+v; want none", c)
	}
	if !s.Root.Readonly {
		t.Error("root is writable")
	}
	var types []string
	for _, ns := range s.Linux.Namespaces {
		types = append(types, string(ns.Type))
		if ns.Type == specs.NetworkNamespace && ns.Path != "/run/netns/gantry-g1" {
			t.Errorf("network namespace %q", ns.Path)
		}
	}
	for _, want := range []string{"pid", "ipc", "uts", "mount", "network"} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s namespace", want)
		}
	}
	if slices.Contains(types, "user") {
		t.Error("a user namespace would let the gear be root inside")
	}
	if s.Linux.CgroupsPath != "/gantry/g1/proc" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	blocked := s.Linux.Seccomp.Syscalls[0].Names
	for _, sc := range []string{"mount", "kexec_load", "init_module", "unshare", "setns", "bpf", "pivot_root"} {
		if !slices.Contains(blocked, sc) {
			t.Errorf("seccomp does not refuse %s", sc)
		}
	}
	mounts := map[string][]string{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m.Options
	}
	if !slices.Contains(mounts["/usr"], "ro") || !slices.Contains(mounts["/etc"], "ro") {
		t.Error("host system paths are not read-only")
	}
	if !slices.Contains(mounts["/var/lib/gantry/apps/a/logs"], "ro") || slices.Contains(mounts["/var/lib/gantry/apps/a/data"], "ro") {
		t.Errorf("app mounts: %v", mounts)
	}
	if _, ok := mounts["/var/lib/gantry"]; ok {
		t.Error("the whole data directory is mounted")
	}
}

func TestResolvConfMount(t *testing.T) {
	spec := OCI(Spec{ID: "g1", ResolvConf: "/var/lib/gantry/run/gear-resolv.conf"})
	found := false
	for _, m := range spec.Mounts {
		if m.Destination == "/etc/resolv.conf" {
			found = m.Source == "/var/lib/gantry/run/gear-resolv.conf" && m.Type == "bind"
		}
		if found && m.Destination == "/etc" {
			t.Fatal("/etc is mounted after /etc/resolv.conf and hides it")
		}
	}
	if !found {
		t.Fatalf("no /etc/resolv.conf bind in %+v", spec.Mounts)
	}
	for _, m := range OCI(Spec{ID: "g1"}).Mounts {
		if m.Destination == "/etc/resolv.conf" {
			t.Fatal("a resolv.conf mount without ResolvConf")
		}
	}
}
