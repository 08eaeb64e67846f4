#!/usr/bin/env bash
# `make fuzz`: every libFuzzer target in fuzz/ for FUZZ_SECONDS each
# (default 60), from the committed seeds in fuzz/seeds/<target>. Installs
# the nightly toolchain and cargo-fuzz when missing. The corpus grows in
# target/fuzz/corpus (the seeds stay as committed); a crash, hang or
# out-of-memory leaves its input in target/fuzz/artifacts/<target>/ and
# makes the run fail, after every target has had its turn.
#   FUZZ_SECONDS=5 make fuzz            a smoke run (CI)
#   FUZZ_TARGETS="sign_auth config" make fuzz
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
say() { printf 'fuzz: %s\n' "$*"; }

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain (cargo-fuzz needs it for the sanitizer flags)"
  rustup toolchain install nightly --profile minimal >/dev/null
fi
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo-fuzz" ]; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz/build"
targets="${FUZZ_TARGETS:-$(cd fuzz && cargo +nightly fuzz list)}"

say "building the targets"
(cd fuzz && cargo +nightly fuzz build --release --debug-assertions) >&2

summary=target/fuzz/summary.md
mkdir -p target/fuzz
{
  echo "| target | seconds | executions | exec/s | corpus | result |"
  echo "|---|---:|---:|---:|---:|---|"
} > "$summary"
failed=()
for target in $targets; do
  corpus="target/fuzz/corpus/$target"
  artifacts="target/fuzz/artifacts/$target"
  log="target/fuzz/$target.log"
  mkdir -p "$corpus" "$artifacts" "fuzz/seeds/$target"
  say "$target: ${seconds}s"
  result=ok
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or a
  # blow-up past 2 GB is an out-of-memory finding.
  if ! (cd fuzz && cargo +nightly fuzz run --release --debug-assertions "$target" \
        "../$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 \
        -artifact_prefix="../$artifacts/") >"$log" 2>&1; then
    result="FAILED (see $log, input in $artifacts)"
    failed+=("$target")
  fi
  executions=$(awk '/stat::number_of_executed_units/ {s += $2} END {print s + 0}' "$log")
  rate=$(( executions / (seconds > 0 ? seconds : 1) ))
  size=$(find "$corpus" -type f | wc -l)
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "$seconds" "$executions" "$rate" "$size" "$result" >> "$summary"
done
cat "$summary"
if [ "${#failed[@]}" -gt 0 ]; then
  say "findings in: ${failed[*]}" >&2
  exit 1
fi
