// Package sim is envdr's simulation checker (make sim; a short form runs in go test): seeded,
// replayable schedules of operations over the real daemon pipeline, record store, verify,
// rewrap and drill code, against three simulated regions (the real KMS stand-in in process, an
// in-process DynamoDB global-table model at AWS's weakest documented semantics), with the record
// invariants I1-I6 of docs/FORMAT.md asserted once each schedule has settled. docs/FAULTS.md
// describes the model and the figures.
package sim
