# Drills and key lifecycle (docs/DRILLS.md): figures for drill/verify at scale and the rewrap soak.
# Both run on their own stand-in (package localtest) in front of the backends of `make local-up`.
.PHONY: drill-bench rewrap-soak

# DRILL_N records (DRILL_BENCH_RECORDS is the old name); drill and verify run at 10,000, every
# tenfold size below DRILL_N, and DRILL_N. DRILL_QUOTA: the stand-in's KMS limit per region for
# the throttled verify run. DRILL_BIN: the envdr binary run (a copy keeps a long run safe from
# rebuilds of bin/envdr).
DRILL_BENCH_RECORDS ?= 100000
DRILL_N             ?= $(DRILL_BENCH_RECORDS)
DRILL_QUOTA         ?= 100
DRILL_BIN           ?= $(BIN)
DRILL_TIMEOUT       ?= 300m
REWRAP_SOAK_RECORDS ?= 10000

drill-bench: build local-up ## drill and verify rate, peak RSS and KMS-quota fraction at 10,000 records, tenfold, ... DRILL_N (100,000)
	ENVDR_REQUIRE_LOCAL=1 ENVDR_BIN=$(abspath $(DRILL_BIN)) ENVDR_DRILL_N=$(DRILL_N) ENVDR_DRILL_QUOTA=$(DRILL_QUOTA) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkDrillScale$$' -benchtime 1x -timeout $(DRILL_TIMEOUT) ./recovery/

rewrap-soak: local-up ## rotate a key and rewrap 10,000 records, killed midway and resumed: each re-wrapped exactly once
	ENVDR_REQUIRE_LOCAL=1 ENVDR_SOAK_RECORDS=$(REWRAP_SOAK_RECORDS) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkRewrapSoak$$' -benchtime 1x -timeout 60m ./recovery/

# Issue 25's figures: a statistical verify, and 1, 2 and 4 shards of a full verify side by side,
# on SCALE_N records (default 100,000; SCALE_N=1000000 for a million: seeding alone is long).
# SCALE_SHARDS: the shard counts of the full verify (1,2,4; none skips them: a full pass of a
# million takes most of an hour here). SCALE_HOLD=FILE: at the end, write the bench's config path
# to FILE and keep the table until FILE is removed (to run more commands against it by hand).
SCALE_N      ?= 100000
SCALE_SHARDS ?= 1,2,4
SCALE_HOLD   ?=
# SCALE_STEPS: sizes below SCALE_N to seed up to first, each followed by the statistical verify.
SCALE_STEPS  ?=
# SCALE_LATENCY: added to every request of a region's services for the shards' runs only, so one
# shard is bound by round trips as on AWS rather than by this machine's two cores: D for every
# region (20ms, 20ms±5ms) or REGION=D,... (us-east-1=2ms,eu-west-1=70ms,ap-southeast-2=200ms:
# the others as seen from us-east-1); SCALE_WORKERS: verify --workers per shard (32).
SCALE_LATENCY ?=
SCALE_WORKERS ?= 32
.PHONY: scale-bench
scale-bench: build local-up ## statistical verify (99.9%, 0.1%) and 1/2/4-shard verify on SCALE_N (100,000) records; docs/BENCH.md
	ENVDR_REQUIRE_LOCAL=1 ENVDR_BIN=$(abspath $(DRILL_BIN)) ENVDR_SCALE_N=$(SCALE_N) \
		ENVDR_SCALE_SHARDS=$(SCALE_SHARDS) ENVDR_SCALE_HOLD=$(SCALE_HOLD) ENVDR_SCALE_STEPS=$(SCALE_STEPS) \
		ENVDR_SCALE_LATENCY='$(SCALE_LATENCY)' ENVDR_SCALE_WORKERS=$(SCALE_WORKERS) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 300m ./recovery/

# The scrubber at scale (issue 25): SCRUB_N records (100,000), one daemon's scrubber per region
# at a 5% budget of SCRUB_KMS_RATE (2,000/s: 100 KMS calls/s each), the period the budget needs
# (N / (5% x rate), x 1.25); coverage time, KMS calls against the budget, a broken wrap repaired.
SCRUB_N        ?= 100000
SCRUB_KMS_RATE ?= 2000
.PHONY: scrub-bench
scrub-bench: local-up ## the scrubber at a 5% budget on SCRUB_N (100,000) records: covers the table in its period, holds the budget, repairs a broken wrap; docs/BENCH.md
	ENVDR_REQUIRE_LOCAL=1 ENVDR_SCRUB_N=$(SCRUB_N) ENVDR_SCRUB_KMS_RATE=$(SCRUB_KMS_RATE) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkScrub$$' -benchtime 1x -timeout 300m ./recovery/
