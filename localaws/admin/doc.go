// Package admin is the wire of the local stand-in's admin endpoint (envdr-local, docs/LOCAL.md):
// its client and the types it sends and receives: faults, region status, replication counters,
// the IAM simulation, the fixed base port and config name.
//
// It is small and pure (standard library only, no Linux-only code) on purpose: the envdr binary
// imports it for `envdr local down/up/fault/...` and `envdr doctor`, and so builds for every
// laptop while the stand-in itself (package localaws and below) stays out of its import graph.
// Package localaws uses these types through aliases.
package admin
