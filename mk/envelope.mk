# Envelope format (package envelope, docs/FORMAT.md): fuzzing, vectors, benchmarks.
# fuzz-short and fuzz are prerequisite-only here so other areas can hang their own targets on them.
.PHONY: fuzz-short envelope-fuzz-short envelope-fuzz envelope-vectors bench-envelope

ENVELOPE_FUZZ_TARGETS := FuzzHeader FuzzOpen FuzzRecord FuzzEvent
# Per target. FUZZTIME for the long run; the short run is what make test does.
FUZZTIME ?= 5m
FUZZTIME_SHORT ?= 10s
# Minimising each new input can take up to a minute by default and would eat a short run.
FUZZMINIMIZETIME ?= 100x

fuzz-short: envelope-fuzz-short ## short fuzz pass on every fuzz target (make test runs it)
fuzz: envelope-fuzz ## long fuzz runs, FUZZTIME per target (default 5m)

envelope-fuzz-short: ## fuzz each envelope decoder and Open for FUZZTIME_SHORT (10s)
	@set -e; for t in $(ENVELOPE_FUZZ_TARGETS); do \
	  echo "-- envelope $$t ($(FUZZTIME_SHORT))"; \
	  GO=$(GO) bash scripts/fuzz-one.sh envelope $$t $(FUZZTIME_SHORT) $(FUZZMINIMIZETIME); \
	done

envelope-fuzz: ## fuzz each envelope target for FUZZTIME
	@set -e; for t in $(ENVELOPE_FUZZ_TARGETS); do \
	  echo "-- envelope $$t ($(FUZZTIME))"; \
	  $(GO) test ./envelope/ -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 10s; \
	done

envelope-vectors: ## regenerate envelope/testdata/vectors (deterministic; review the diff)
	$(GO) generate ./envelope/

bench-envelope: ## envelope library vs raw AES-256-GCM only (MB/s, raw-MB/s, x-raw per chunk size)
	$(GO) test ./envelope/ -run '^$$' -bench . -benchmem -count 3
