// Package enforce applies apps' outbound policies on this machine: it
// renders each app's policy (egress/policy) into an nftables ruleset and
// loads it in the network namespace of each of the app's namespaced gears,
// refreshes hostname rules on their DNS TTLs, lets the addresses of the
// gears' own lookups through (LearnDNS, fed by the DNS forwarder), reads
// refused and failed destinations, and flags port scans (an event, and
// with ScanBlock a cut). It decides nothing about which gears exist (the
// agent calls Apply when a gear starts) and enforces nothing in process
// mode (Enabled false): it says so instead.
package enforce
