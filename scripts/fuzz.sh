#!/usr/bin/env bash
# Runs the cargo fuzz targets in fuzz/ one after the other, each for SECONDS, in one fuzzing
# process (docs/reliability.md, "Fuzzing"). Not part of CI.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default: 300 s, every target
#
# Needs a nightly toolchain (`cargo +nightly`) and cargo-fuzz (`cargo install cargo-fuzz`).
# The corpus grows in fuzz/corpus/<target> (started from the committed seeds in
# fuzz/seeds/<target>), crashes land in fuzz/artifacts/<target>, and each run's libFuzzer log is
# kept as fuzz/logs/<target>.log. Exits non-zero if any target found something.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder value_decoder ref_resolution)
fi

cargo +nightly --version
cargo +nightly fuzz build

status=0
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== $t: ${secs} s"
    # -jobs=1 -workers=1: libFuzzer runs the one job in a child process and writes its output to
    # fuzz-0.log in the current directory; it is moved to logs/ afterwards.
    rm -f fuzz-0.log
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -jobs=1 -workers=1 -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1; then
        status=1
    fi
    if [ -f fuzz-0.log ]; then
        mv fuzz-0.log "logs/$t.log"
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|^Done |^stat::|ERROR|SUMMARY' "logs/$t.log" || true
    echo "corpus/$t: $(find "corpus/$t" -type f | wc -l) files"
done
exit $status
