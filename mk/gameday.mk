# Game days (docs/DRILLS.md): the protection-time percentiles over GAMEDAY_N envelopes, and
# screenshots of the report pages in headless Chromium. Neither is part of `make test`: the
# first is long, the second installs Chromium with apt-get.
.PHONY: gameday-bench report-screenshots

GAMEDAY_N      ?= 10000
GAMEDAY_BEFORE ?= 30
GAMEDAY_DURING ?= 60
GAMEDAY_LAG_MS ?= 1000

gameday-bench: local-up ## a game day losing us-east-1 with GAMEDAY_N (10,000) envelopes and 1 s of lag: protection p50..p99.99, max; .bench/gameday.*
	ENVDR_REQUIRE_LOCAL=1 ENVDR_GAMEDAY_N=$(GAMEDAY_N) ENVDR_GAMEDAY_BEFORE=$(GAMEDAY_BEFORE) ENVDR_GAMEDAY_DURING=$(GAMEDAY_DURING) \
		ENVDR_GAMEDAY_LAG=$(GAMEDAY_LAG_MS) ENVDR_GAMEDAY_REPORT=$(abspath .bench/gameday) \
		$(GO) test -count=1 -run '^$$' -bench '^BenchmarkGamedayScale$$' -benchtime 1x -timeout 3h ./recovery/

report-screenshots: local-up ## install Chromium (apt-get), run a short game day and a drill, screenshot their HTML pages into .screenshots/
	bash scripts/report-screenshots.sh
