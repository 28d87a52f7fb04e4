#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time, one after the other, and exits non-zero if
# any of them found a crash (the input is then in fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ once fixed, and `cargo test --test fuzz_regressions` keeps it).
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 600)
#
# Needs the nightly toolchain (sanitizers); installs cargo-fuzz when missing. New corpus
# entries go to fuzz/corpus/<target>/ (not committed); fuzz/regressions/<target>/ seeds it.
set -euo pipefail

seconds="${1:-600}"
case "$seconds" in
    '' | *[!0-9]*)
        echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2
        exit 2
        ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build
mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/run.log"
    echo "== $target: ${seconds}s, log in $log"
    status=0
    # -timeout: an input taking over 10 s is a hang, reported like a crash.
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/regressions/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 | tee "$log" || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -n 1 || true)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        summary+=("$target: FAILED (exit $status) after ${execs:-?} execs; see $log and fuzz/artifacts/$target/")
    else
        summary+=("$target: ok, ${seconds}s, ${execs:-?} execs, ${cov:-no coverage line}")
    fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "crashes or hangs in: ${failed[*]}" >&2
    exit 1
fi
