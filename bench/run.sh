#!/usr/bin/env bash
# bench/run.sh - build autorthanc (Release) and benchmark its exports against
# plain curl on a private Orthanc.  See bench/README.md.
#
#   bench/run.sh [--quick] [--runs N] [--connections 1,4] [--fsync off,on]
#                [--idle-seconds S] [--poll-interval S] [--no-memory]
#                [--cases ct300,small2000] [--binary PATH] [--no-build]
#                [--reference-only] [--parallel-immediate] [--keep]
#                [--probe PATH] [--binary-b PATH]
#
# --quick: tiny studies, one run, a few seconds; exits 0 when everything
# worked.  Then bench/pipeline.py: backlog studies/s and latency under load.  Times are printed, never asserted.  Orthanc runs on loopback ports
# chosen at run time; every process this script starts is ended on exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build="$repo/build-bench"
binary=""
build_it=1
pass=()

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; build_it=0; shift 2 ;;
        --binary=*) binary="${1#*=}"; build_it=0; shift ;;
        --no-build) build_it=0; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) pass+=("$1"); shift ;;
    esac
done
[ -n "$binary" ] || binary="$build/autorthanc"

for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 2; }
done
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || [ -n "${AR_ORTHANC:-}" ] ||
    { echo "bench: Orthanc is not installed (Debian package orthanc)" >&2; exit 2; }

reference_only=0
for a in "${pass[@]+"${pass[@]}"}"; do
    [ "$a" = "--reference-only" ] && reference_only=1
done

if [ "$build_it" = 1 ] && [ "$reference_only" = 0 ]; then
    echo "bench: building autorthanc (Release) in $build" >&2
    cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >"$build.cmake.log" 2>&1 ||
        { cat "$build.cmake.log" >&2; exit 2; }
    cmake --build "$build" --target autorthanc -j"$(nproc)" >"$build.build.log" 2>&1 ||
        { tail -40 "$build.build.log" >&2; echo "bench: build failed" >&2; exit 2; }
fi

# The diagnostic probe (core/export alone) against the same build's core
# library, linked with the libraries CMake linked autorthanc with; the
# benchmark runs without it if it does not build.
probe=""
if [ "$reference_only" = 0 ] && [ -f "$build/libarcore.a" ] && command -v cc >/dev/null; then
    link="$build/CMakeFiles/autorthanc.dir/link.txt"
    if [ -f "$link" ]; then
        libs=$(sed -n 's/.* -o autorthanc //p' "$link")
    else
        libs="libarcore.a $(pkg-config --libs libcurl yaml-0.1 sqlite3 libcrypto 2>/dev/null)"
    fi
    # shellcheck disable=SC2086
    if (cd "$build" && cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$repo/core" \
            "$here/export_probe.c" -o export_probe $libs) 2>"$build.probe.log"; then
        probe="$build/export_probe"
    else
        echo "bench: export_probe did not build (see $build.probe.log); going on without it" >&2
    fi
fi
[ -z "$probe" ] || pass=(--probe "$probe" "${pass[@]+"${pass[@]}"}")

work=$(mktemp -d "${TMPDIR:-/tmp}/arbench.XXXXXXXX")
keep=0
for a in "${pass[@]+"${pass[@]}"}"; do
    [ "$a" = "--keep" ] && keep=1
done

py=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local pidfile pid
    # bench.py stops its Orthancs itself when it gets SIGTERM; give it time
    if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
        kill -TERM "$py" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$py" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$py" 2>/dev/null || true
    fi
    # then anything it left: it records every child it starts as $work/pids/<pid>
    if [ -d "$work/pids" ]; then
        for pidfile in "$work"/pids/*; do
            [ -e "$pidfile" ] || continue
            pid=${pidfile##*/}
            kill -TERM "$pid" 2>/dev/null || true
        done
        for pidfile in "$work"/pids/*; do
            [ -e "$pidfile" ] || continue
            pid=${pidfile##*/}
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    if [ "$keep" = 1 ]; then
        echo "bench: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background so that a signal to this script is handled at once
# (bash runs traps only after a foreground command ends).
python3 "$here/bench.py" --binary "$binary" --workdir "$work" "${pass[@]+"${pass[@]}"}" &
py=$!
rc=0
wait "$py" || rc=$?
py=""
[ "$rc" = 0 ] || exit "$rc"

# The pipeline's backlog throughput and latency under load (bench/pipeline.py).
if [ "$reference_only" = 0 ]; then
    pquick=()
    for a in "${pass[@]+"${pass[@]}"}"; do
        [ "$a" = "--quick" ] && pquick=(--quick)
    done
    python3 "$here/pipeline.py" --binary "$binary" "${pquick[@]+"${pquick[@]}"}" &
    py=$!
    wait "$py" || rc=$?
    py=""
fi
exit "$rc"
