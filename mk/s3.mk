# Issue 24: the S3 data path at the issue's scale, and its figures (docs/BENCH.md).
S3_DEMO_N ?= 200
S3_FIGURES_MIB ?= 256
.PHONY: s3-demo s3-figures
s3-demo: local-up ## issue 24's done-when: S3_DEMO_N (200) objects put by boto3 + 200 sealed to s3://, protected with no --enqueue (on the stand-in's S3, then with an object never replicated); open and drill --data all with us-east-1 lost
	ENVDR_REQUIRE_LOCAL=1 ENVDR_S3_DEMO_N=$(S3_DEMO_N) \
		$(GO) test -count=1 -v -run '^(TestS3OnTheStandIn|TestS3DataPathDrill)$$' -timeout 60m ./cmd/envdr/ | grep -E 's3(figures)?_test|^(---|ok|FAIL)'
s3-figures: local-up ## envdr seal/open to and from s3:// against aws s3 cp of the same bytes (S3_FIGURES_MIB, 256 MiB), 3 rounds
	ENVDR_REQUIRE_LOCAL=1 ENVDR_S3_FIGURES_MIB=$(S3_FIGURES_MIB) \
		$(GO) test -count=1 -v -run '^TestS3Figures$$' -timeout 30m ./cmd/envdr/ | grep -E 's3(figures)?_test|^(---|ok|FAIL)'
