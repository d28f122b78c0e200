# The two commands a new user runs (see README): `make demo` and `make test`.
# Both install what a fresh Debian machine lacks (scripts/setup.sh) before doing anything else.

SHELL := /bin/bash
export LANG ?= C.UTF-8
export LC_ALL ?= C.UTF-8
MIX := cd mix_project && mix

.PHONY: demo test test-otp test-matrix bench bench-scale soak fuzz miri sanitize setup rust-checks elixir-checks clean test-git-dep

## The main job: builds everything and runs the demo tour.
demo: setup
	$(MIX) compile
	$(MIX) binscope.demo

## The whole test suite: Rust gates, Elixir gates, cargo test and mix test.
test: setup rust-checks elixir-checks

## `make test` on a newer OTP inside a Debian root (scripts/test_otp.sh, roots from scripts/otp_root.sh):
## `make test-otp OTP=27` (trixie: OTP 27 + Elixir 1.18) or OTP=29 (sid: OTP 29 + Elixir 1.20). Needs root.
test-otp:
	@[ -n "$(OTP)" ] || { echo "usage: make test-otp OTP=27|29" >&2; exit 2; }
	scripts/test_otp.sh $(OTP)

## The OTP matrix beyond the host's OTP 25: OTP 27, then OTP 29 (each one's `make test`; 29 runs
## even when 27 failed, and the target fails if either did).
test-matrix:
	@s=0; scripts/test_otp.sh 27 || s=1; scripts/test_otp.sh 29 || s=1; exit $$s

## Benchmarks (reports, not timed tests): the ExUnit suites tagged :bench (tables on the console,
## markdown/CSV/SVG under reports/bench/ or $$BINSCOPE_REPORT_DIR/bench/) and the criterion benches
## of the core (output also in reports/bench/criterion.txt). About 10 minutes on 2 cores.
## Smoke runs of every suite are part of `make test`.
bench: setup
	cd mix_project && MIX_ENV=test mix test --only bench
	mkdir -p "$${BINSCOPE_REPORT_DIR:-reports}/bench"
	set -o pipefail; cargo bench -p binscope_core 2>&1 | tee "$${BINSCOPE_REPORT_DIR:-reports}/bench/criterion.txt"

## The scale suite: leaks(), leaks(mode: :full), processes(detail: :basic) and snapshot() on a
## node of 50k and 1M extra processes, each beside recon's algorithm (Binscope.Bench.ReconAnchor),
## interleaved, ratios from one run, plus the floor (one process_info/2 per process) and the
## worst long_schedule / long_gc the scanner saw and where. Needs about 3.5 GB and 2-5 minutes on
## 2 cores; reports (markdown, CSV) to reports/bench/scale.* (or $$BINSCOPE_REPORT_DIR/bench/).
## Sizes: BINSCOPE_SCALE_SMALL, BINSCOPE_SCALE_LARGE; rounds: BINSCOPE_SCALE_ROUNDS (at the large
## size), BINSCOPE_SCALE_SMALL_ROUNDS; some rows only: BINSCOPE_SCALE_ONLY=targeted,snapshot
## (names: targeted snapshot full basic dry_run top; the floor runs at every size used).
## `make test` runs a smoke version (test/bench/scale_smoke_test.exs).
bench-scale: setup
	cd mix_project && ELIXIR_ERL_OPTIONS="+P 4194304 $${ELIXIR_ERL_OPTIONS:-}" MIX_ENV=test \
	  mix test --only bench_scale test/bench/scale_bench_test.exs

## Long hardening run: 1,000,000 hostile calls and a 5-minute concurrent soak (short versions
## of both run in `make test`). Override with BINSCOPE_HOSTILE_CALLS / BINSCOPE_SOAK_SECONDS.
soak: setup
	cd mix_project && BINSCOPE_HOSTILE_CALLS=$${BINSCOPE_HOSTILE_CALLS:-1000000} \
	  BINSCOPE_SOAK_SECONDS=$${BINSCOPE_SOAK_SECONDS:-300} MIX_ENV=test mix test test/binscope/hardening

## Rust hardening (nightly; not part of `make test`, see README "Reliability"):
## cargo-fuzz targets of the core, FUZZ_SECONDS each (default 600, one job).
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} scripts/fuzz.sh

## Miri over binscope_core's unit, property and thread tests (cfg(miri) sizes; about 25 min).
miri:
	scripts/miri.sh

## The NIF built with AddressSanitizer (system allocator) under an ExUnit subset.
sanitize: setup
	scripts/sanitize.sh

## Cross-version remote: Binscope on OTP 29 inspects a bare OTP 25 node and 25 inspects 29, on
## loopback (one node in a Debian root, see scripts/otp_root.sh). CROSS_PAIRS="29:25 25:29 27:25"
## picks other caller:target pairs. Needs root (chroot).
.PHONY: test-cross-otp
test-cross-otp: setup
	scripts/test_cross_otp.sh
## Binscope as a git dependency of a fresh `mix new` app (plain and with tag:); run by .ci/run.
test-git-dep: setup
	scripts/test_git_dep.sh

setup:
	@scripts/setup.sh

rust-checks:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

elixir-checks:
	$(MIX) format --check-formatted
	cd mix_project && MIX_ENV=test mix compile --warnings-as-errors --force
	cd mix_project && MIX_ENV=test mix test

clean:
	cargo clean
	rm -rf mix_project/_build mix_project/priv/native
