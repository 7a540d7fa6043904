#!/usr/bin/env bash
# Fuzzes every parser of outside input (fuzz/, docs/fuzzing.md) with libFuzzer
# through cargo-fuzz, each target for a time budget, then prints a table per
# target: seconds, executions, crashes, timeouts, OOMs. Exits non-zero on any
# finding and says where its reproducer is.
#
#   scripts/fuzz.sh [-j JOBS] [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  wall-clock budget of each target (default 60)
#   TARGET...           some of the targets (default: all of fuzz/fuzz_targets/)
#   -j JOBS             targets run at the same time (default 1)
#
# Environment: FUZZ_SANITIZER (none by default: the code is safe Rust and what we
# hunt is panics, timeouts and runaway memory, which need no ASan; `address`
# works too, at about half the speed), FUZZ_TIMEOUT_SECS (one input, default 10),
# FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_PROFILE (release, or dev for a quicker build).
#
# Only a stable toolchain is needed: cargo-fuzz passes -Z flags, which
# RUSTC_BOOTSTRAP=1 allows on stable. The grown corpus stays in fuzz/target/
# (not committed); findings go to fuzz/artifacts/<target>/. A finding, once
# fixed, is kept in fuzz/regressions/<target>/, which tests/fuzz_regressions.rs
# replays in the ordinary test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=1
if [ "${1:-}" = "-j" ]; then
  jobs=${2:?"-j needs a number"}
  shift 2
fi
seconds=${1:-60}
shift || true
case $seconds in '' | *[!0-9]*)
  echo "usage: scripts/fuzz.sh [-j JOBS] [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
  ;;
esac
all_targets=$(cd fuzz/fuzz_targets && ls -- *.rs | sed 's/\.rs$//')
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  # shellcheck disable=SC2206 # one target name per word
  targets=($all_targets)
fi
for t in "${targets[@]}"; do
  if ! grep -qx -- "$t" <<< "$all_targets"; then
    echo "no fuzz target '$t'; the targets are: $(echo $all_targets)" >&2
    exit 2
  fi
done

sanitizer=${FUZZ_SANITIZER:-none}
# `dev` builds the instrumented targets without optimizations: several times less to
# compile from nothing (CI's short budget), several times fewer executions a second
# (the long runs use the default, `release`).
profile=${FUZZ_PROFILE:-release}
case "$profile" in
  release) profile_flag=() ;;
  dev) profile_flag=(--dev); export CARGO_PROFILE_DEV_DEBUG=0 ;;
  *) echo "FUZZ_PROFILE must be release or dev, got '$profile'" >&2; exit 2 ;;
esac
timeout_secs=${FUZZ_TIMEOUT_SECS:-10}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-2048}
export RUSTC_BOOTSTRAP=1
# The instrumented build has its own target directory (fuzz/target), never the main one.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version > /dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

logs=fuzz/target/logs
mkdir -p "$logs"
echo "==> building the fuzz targets ($profile profile, sanitizer: $sanitizer, debug assertions on)"
build_start=$SECONDS
# All targets at once: they share one build of the crate, and cargo fuzz takes one name or none.
if ! cargo fuzz build "${profile_flag[@]}" --sanitizer "$sanitizer" --debug-assertions > "$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log" >&2
  echo "the fuzz build failed; the whole output is in $logs/build.log" >&2
  exit 1
fi
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/$([ "$profile" = dev ] && echo debug || echo release)
for t in "${targets[@]}"; do
  [ -x "$bin_dir/$t" ] || { echo "the fuzz build made no $bin_dir/$t" >&2; exit 1; }
done
echo "==> built in $((SECONDS - build_start)) s"

run_one() {
  local t=$1
  local grown=fuzz/target/grown-corpus/$t artifacts=fuzz/artifacts/$t
  mkdir -p "$grown" "$artifacts" "fuzz/corpus/$t" "fuzz/regressions/$t"
  local stamp=$logs/$t.started
  touch "$stamp"
  local start=$SECONDS rc=0
  # The first folder receives new inputs; the committed ones are only read.
  "$bin_dir/$t" "$grown" "fuzz/corpus/$t" "fuzz/regressions/$t" \
    -max_total_time="$seconds" -timeout="$timeout_secs" -rss_limit_mb="$rss_limit_mb" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" > "$logs/$t.log" 2>&1 || rc=$?
  echo "$((SECONDS - start)) $rc" > "$logs/$t.result"
}

echo "==> fuzzing ${#targets[@]} target(s), $seconds s each, $jobs at a time; logs in $logs/"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

findings=0
printf '\n%-16s %8s %12s %9s %8s %8s %6s\n' target seconds executions exec/s crashes timeouts OOMs
for t in "${targets[@]}"; do
  read -r took rc < "$logs/$t.result"
  log=$logs/$t.log
  execs=$(awk '/stat::number_of_executed_units/ { n = $NF } END { print n + 0 }' "$log")
  count() { find "fuzz/artifacts/$t" -maxdepth 1 -type f -name "$1-*" -newer "$logs/$t.started" | wc -l; }
  crashes=$(count crash)
  timeouts=$(count timeout)
  ooms=$(count oom)
  leaks=$(count leak)
  crashes=$((crashes + leaks))
  # A fuzzer that stopped on its own without leaving an input behind still failed.
  if [ "$rc" != 0 ] && [ $((crashes + timeouts + ooms)) -eq 0 ]; then
    crashes=1
  fi
  printf '%-16s %8s %12s %9s %8s %8s %6s\n' "$t" "$took" "$execs" "$((execs / (took > 0 ? took : 1)))" \
    "$crashes" "$timeouts" "$ooms"
  findings=$((findings + crashes + timeouts + ooms))
done

if [ "$findings" -gt 0 ]; then
  echo
  echo "FINDINGS: $findings. Reproducers (replay one with $bin_dir/<target> <file>):"
  for t in "${targets[@]}"; do
    find "fuzz/artifacts/$t" -maxdepth 1 -type f -newer "$logs/$t.started" \
      \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) \
      -printf "  %p\n"
    grep -a -m1 -E "panicked at|ERROR: libFuzzer" "$logs/$t.log" | sed "s/^/  $t: /" || true
  done
  echo "Fix the code, then keep each input in fuzz/regressions/<target>/ (tests/fuzz_regressions.rs replays them)."
  exit 1
fi
echo "no crash, timeout or OOM"
