# Benchmarks (docs/BENCH.md): envelope library vs raw AES-256-GCM, envdr CLI vs age (pinned,
# installed into .tools/bin), the replicator as a process on an isolated stand-in. Results and the
# summary table go to the git-ignored .bench/. Needs the shared stand-in (make local-up, which
# these targets run and leave running).
.PHONY: bench-short slo-bench slo-bench-short
AGE_VERSION ?= v1.2.1
export AGE_VERSION

bench: ## figures: library vs AES-GCM, CLI vs age on 1 GiB, replicator (2,000 envelopes), decryptability SLO (make slo-bench); summary in .bench/summary.txt
	@bash scripts/bench.sh

bench-short: ## the bench harness end to end at tiny sizes (~1 min, figures not meaningful); summary in .bench/short/
	@BENCH_SHORT=1 bash scripts/bench.sh

# SLO_CASES picks the SLO cases (lag, quota, loss, scrub; a case named twice runs twice:
# SLO_CASES=lag,scrub,lag,scrub) and SLO_N the envelopes per case; unset, bench.sh's defaults.
SLO_ENV = $(if $(SLO_CASES),BENCH_SLO_CASES=$(SLO_CASES)) $(if $(SLO_N),BENCH_SLO_ENVELOPES=$(SLO_N))

slo-bench: ## the decryptability SLO: 10,000 envelopes at 25/s with 1 s lag, KMS throttled, a region lost (SLO_CASES=lag,scrub: with and without the scrubber); exact p50..p99.99 in .bench/slo.txt (~30 min)
	@$(SLO_ENV) BENCH_ONLY=slo bash scripts/bench.sh

slo-bench-short: ## the SLO bench end to end on 300 envelopes per case (~4 min, figures not meaningful); .bench/short/slo.txt
	@$(SLO_ENV) BENCH_ONLY=slo BENCH_SHORT=1 bash scripts/bench.sh
