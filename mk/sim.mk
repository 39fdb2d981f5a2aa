# The simulation checker (test/sim, docs/FAULTS.md "Simulation checker"): seeded schedules over
# the real daemon pipeline, store, verify, rewrap, drill and open code against simulated regions,
# the record invariants I1-I6 asserted after each. Its short form (50 schedules) runs inside
# `go test ./...` (make test). It needs no stand-in: the regions are simulated in process.
.PHONY: sim
SIM_N ?= 2000
# SEED alone replays that one schedule (OPS=i,j,... keeps only those ops: a shrunk schedule);
# SEED with SIM_N runs SIM_N schedules from seed SEED.
SEED  ?=
OPS   ?=
SIM_PAR ?=

sim: ## simulation checker, long form (SIM_N schedules, default 2000); SEED=... [OPS=...] replays one
	@mkdir -p .bench
	set -o pipefail; ENVDR_SIM_SEED=$(SEED) ENVDR_SIM_OPS=$(OPS) ENVDR_SIM_PAR=$(SIM_PAR) \
		$(if $(SEED),$(if $(filter command line,$(origin SIM_N)),ENVDR_SIM_N=$(SIM_N),),ENVDR_SIM_N=$(SIM_N)) \
		$(GO) test -count=1 -timeout 120m -v -run 'TestSimulation$$' ./test/sim/ 2>&1 | tee .bench/sim.log
