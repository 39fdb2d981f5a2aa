// Package faults is envdr's fault-injection and security suite (docs/FAULTS.md). Its tests drive
// real envdr processes (built once per test binary) against the local three-region stand-in:
// kill -9 at random moments, lost regions, two daemons with duplicated events, throttled KMS,
// poison events and tampered envelopes and records. Every test captures all output of every
// envdr process and fails if a DEK or a plaintext sample appears in it, raw, base64 or hex.
//
// The package holds only tests; this file exists for the package comment.
package faults
