# Drills and key lifecycle (docs/DRILLS.md): figures for drill/verify at scale and the rewrap soak.
# Both run on their own stand-in (package localtest) in front of the backends of `make local-up`.
.PHONY: drill-bench rewrap-soak

DRILL_BENCH_RECORDS ?= 10000
DRILL_BENCH_GROWTH  ?= 10
REWRAP_SOAK_RECORDS ?= 10000

drill-bench: build local-up ## drill and verify rate (records/s) and peak RSS on 10,000 records, then tenfold
	ENVDR_REQUIRE_LOCAL=1 ENVDR_BIN=$(abspath $(BIN)) ENVDR_BENCH_RECORDS=$(DRILL_BENCH_RECORDS) ENVDR_BENCH_GROWTH=$(DRILL_BENCH_GROWTH) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkDrillScale$$' -benchtime 1x -timeout 90m ./recovery/

rewrap-soak: local-up ## rotate a key and rewrap 10,000 records, killed midway and resumed: each re-wrapped exactly once
	ENVDR_REQUIRE_LOCAL=1 ENVDR_SOAK_RECORDS=$(REWRAP_SOAK_RECORDS) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkRewrapSoak$$' -benchtime 1x -timeout 60m ./recovery/
