#!/usr/bin/env bash
# cargo-fuzz targets of the pure core (native/binscope_core/fuzz, its own workspace).
#
#   scripts/fuzz.sh [target ...]        default: every target, FUZZ_SECONDS each (default 600)
#   FUZZ_SECONDS=60 scripts/fuzz.sh store_ops
#
# One libFuzzer process per target, one after the other (-jobs=1): the machine is shared.
# Built with debug assertions (-a) so counter over/underflows panic. Needs nightly and cargo-fuzz;
# installs them when missing. The corpus persists in fuzz/corpus/<target> (gitignored); a crash
# is written to fuzz/artifacts/<target>/ and this script exits non-zero. Per-run logs and a one-line
# summary (executions, corpus, findings) go to fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/../native/binscope_core/fuzz"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-600}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)

mkdir -p logs
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cargo +nightly fuzz build -O -a "$t"
  log="logs/$t-$(date +%Y%m%dT%H%M%S).log"
  echo "fuzzing $t for ${SECONDS_PER_TARGET}s (log: fuzz/$log)"
  set +e
  cargo +nightly fuzz run -O -a "$t" -- -jobs=1 -workers=1 \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  # With -jobs, libFuzzer writes the worker's output to fuzz-0.log in the working directory.
  [ -f fuzz-0.log ] && cat fuzz-0.log >>"$log" && rm -f fuzz-0.log
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
  corpus=$(find "corpus/$t" -type f | wc -l)
  line="$(date -u +%FT%TZ) $t ${SECONDS_PER_TARGET}s executions=${runs:-?} corpus=$corpus artifacts=$crashes rc=$rc"
  echo "$line" | tee -a logs/summary.txt
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=1
    grep -E 'panicked|SUMMARY|Test unit written' "$log" | head -5 || true
  fi
done
exit "$status"
