#!/usr/bin/env bash
# tests/run.sh - every test of autorthanc, as CI runs it (`bash tests/run.sh`).
#  1. install the dependencies (tests/deps.sh, a no-op when present);
#  2. Release build (the project's flags include -Werror), then every ctest
#     test: unit tests, rule cases and the integration tests against real
#     Orthancs on loopback ports chosen at run time;
#  3. a second build with -DAR_SANITIZE=ON (ASan + UBSan) running the whole
#     suite again (unit and integration tests) against the sanitized binary.
# Prints how long each stage took; exits non-zero if any build or test fails;
# the last line sums up all tests.
# Environment: AR_BUILD_DIR, AR_ASAN_BUILD_DIR (build folders), AR_JOBS (2),
# AR_SKIP_ASAN=1 to skip step 3, AR_ASAN_INTEGRATION=0 to run only the unit
# tests there (about 2 minutes less), AR_SKIP_FUZZ=1 and
# AR_SKIP_BENCH=1 to skip the bounded fuzzing and the benchmark smoke run.
set -uo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${AR_BUILD_DIR:-$src/build-test}
asan=${AR_ASAN_BUILD_DIR:-$src/build-asan}
jobs=${AR_JOBS:-2}
logdir=$(mktemp -d "${TMPDIR:-/tmp}/autorthanc-run.XXXXXX")
trap 'rm -rf "$logdir"' EXIT

# Each stage says how long the one before it took; the summary lists them all.
stage_name="" stage_start=$SECONDS run_start=$SECONDS timings=()
end_stage() {
  if [[ -n $stage_name ]]; then
    local took=$((SECONDS - stage_start))
    printf '==== (%s took %d s)\n' "$stage_name" "$took"
    timings+=("$(printf '%5d s  %s' "$took" "$stage_name")")
  fi
}
step() { end_stage; stage_name="$*" stage_start=$SECONDS; printf '\n==== %s\n' "$*"; }
die() { echo "tests/run.sh: $*" >&2; exit 1; }

step "dependencies"
bash "$src/tests/deps.sh" || die "installing dependencies failed"

step "Release build in $build"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DAR_SANITIZE=OFF || die "configure failed"
cmake --build "$build" -j"$jobs" || die "Release build failed"

status=0
step "ctest (all tests) in $build"
(cd "$build" && ctest -j"$jobs" --output-on-failure --no-tests=error) 2>&1 | tee "$logdir/main.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

if [[ "${AR_SKIP_ASAN:-0}" != 1 ]]; then
  step "ASan+UBSan build in $asan"
  cmake -S "$src" -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DAR_SANITIZE=ON || die "sanitizer configure failed"
  cmake --build "$asan" -j"$jobs" || die "sanitizer build failed"
  asan_tests='^unit\.'
  if [[ "${AR_ASAN_INTEGRATION:-1}" == 1 ]]; then asan_tests='^(unit|integration)\.'; fi
  step "ctest ($asan_tests) under ASan+UBSan"
  (cd "$asan" && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1} \
     UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
     ctest -j"$jobs" -R "$asan_tests" --output-on-failure --no-tests=error) 2>&1 | tee "$logdir/asan.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

# Bounded fuzzing of the rule compiler and of name sanitising (libFuzzer).
if [[ "${AR_SKIP_FUZZ:-0}" != 1 ]]; then
  step "fuzz (tests/fuzz/run.sh)"
  bash "$src/tests/fuzz/run.sh" 2>&1 | tee "$logdir/fuzz.out"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

# The benchmark's smoke mode keeps bench/run.sh working (numbers are printed, never asserted).
if [[ "${AR_SKIP_BENCH:-0}" != 1 && -f "$src/bench/run.sh" ]]; then
  step "benchmark smoke run (bench/run.sh --quick)"
  bash "$src/bench/run.sh" --quick --binary "$build/autorthanc" 2>&1 | tee "$logdir/bench.out"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

end_stage
echo
echo "stage times:"
printf '  %s\n' "${timings[@]}"
printf '  %5d s  all\n' "$((SECONDS - run_start))"

# One closing line for all runs: "N passed, N failed".
passed=0 failed=0
for f in "$logdir"/*.log; do
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$f" | tail -1 || true)
  if [[ $line =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
    failed=$((failed + BASH_REMATCH[1]))
    passed=$((passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
  else
    status=1
  fi
done
if [[ -f "$logdir/fuzz.out" && $(tail -1 "$logdir/fuzz.out") =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  passed=$((passed + BASH_REMATCH[1])) failed=$((failed + BASH_REMATCH[2]))
fi
echo
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]] || status=1
exit $status
