#!/usr/bin/env bash
# tests/fuzz/run.sh - build the libFuzzer targets with clang and run each for a
# bounded time on its committed seed corpus.
#
#   fuzz_sanitize  ar_sanitize_component keeps the promises of core/sanitize.h
#   fuzz_compile   any bytes as a JSON rule file: load, compile, evaluate on the
#                  fixtures of tests/cases/_fixtures, plan; no crash, no leak,
#                  no plan path outside the storage root
#   fuzz_snapshot  any bytes as a study fixture and as Orthanc's three answers:
#                  refused with a message, or a snapshot whose ranges and tags
#                  keep core/snapshot.h's promises (also under a memory limit)
#
# Both are built with -fsanitize=fuzzer,address,undefined (cmake -DAR_FUZZ=ON,
# the core and bindings libraries instrumented too) in their own build folder.
# The seed corpus (tests/fuzz/corpus_*) is only read: new inputs go to a
# temporary folder, crashes to $AR_FUZZ_ARTIFACTS (default: the build folder),
# so a run leaves the source tree unchanged.  Exit 0 when every target ran its
# time without a finding, 1 otherwise; the last line sums up.
#
# Environment: AR_FUZZ_BUILD_DIR (default <src>/build-fuzz), AR_FUZZ_SECONDS
# (per target, default 30), AR_JOBS (build parallelism, default 2),
# AR_FUZZ_DEPS=0 to skip installing clang (tests/deps.sh clang libclang-rt-14-dev).
# Replay a finding: <build>/fuzz_compile <artifact file>
set -uo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${AR_FUZZ_BUILD_DIR:-$src/build-fuzz}
seconds=${AR_FUZZ_SECONDS:-30}
jobs=${AR_JOBS:-2}
artifacts=${AR_FUZZ_ARTIFACTS:-$build/fuzz-artifacts}

if [[ "${AR_FUZZ_DEPS:-1}" != 0 ]]; then
  rt=libclang-rt-14-dev
  bash "$src/tests/deps.sh" clang "$rt" || { echo "fuzz: installing clang failed" >&2; exit 1; }
fi
command -v clang >/dev/null || { echo "fuzz: clang not found" >&2; exit 1; }

cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DAR_FUZZ=ON -DAR_SANITIZE=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || { echo "fuzz: configure failed" >&2; exit 1; }
cmake --build "$build" -j"$jobs" --target fuzz_sanitize fuzz_compile fuzz_snapshot ||
  { echo "fuzz: build failed" >&2; exit 1; }

mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/autorthanc-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
run_target() {
  local name=$1 corpus=$2; shift 2
  mkdir -p "$work/$name"
  echo "==== $name: ${seconds}s on $(ls "$corpus" | wc -l) seed(s)"
  if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
     UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
     "$build/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$artifacts/$name-" "$@" \
       "$work/$name" "$corpus" >"$work/$name.log" 2>&1; then
    passed=$((passed + 1))
    echo "ok - $name ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$') runs)"
  else
    failed=$((failed + 1))
    echo "not ok - $name: finding in $artifacts (log tail below)"
    tail -40 "$work/$name.log" | sed 's/^/  /'
  fi
}

run_target fuzz_sanitize "$src/tests/fuzz/corpus_sanitize" -max_len=1024
run_target fuzz_compile "$src/tests/fuzz/corpus_compile" -max_len=4096 \
  -dict="$src/tests/fuzz/rule.dict"
run_target fuzz_snapshot "$src/tests/fuzz/corpus_snapshot" -max_len=8192 \
  -dict="$src/tests/fuzz/snapshot.dict"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
