#!/usr/bin/env bash
# Long runs of the decoder property tests (src/fuzz.rs and the reference-model
# test of src/protocol/decode.rs): CASES cases per property, repeated until
# MINUTES have passed (defaults: 100000 cases, 30 minutes). Each round uses
# fresh random inputs. A failure prints the shrunk input and stops the loop:
# add it to tests/fixtures/fuzz/ and fix the decoder.
#
#   loadtest/fuzz.sh            # 30 minutes
#   MINUTES=5 CASES=20000 loadtest/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${MINUTES:-30}"
CASES="${CASES:-100000}"
end=$(( $(date +%s) + MINUTES * 60 ))
cargo test --release --lib --no-run -q
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  start=$(date +%s)
  log=$(mktemp)
  if ! CHATGATE_FUZZ_SEED="$(( $(date +%s) + round ))" CHATGATE_FUZZ_CASES="$CASES" cargo test --release --lib -q -- fuzz:: protocol::decode:: >"$log" 2>&1; then
    grep -E "panicked|minimal failing|Test failed" -A3 "$log" || cat "$log"
    echo "round $round FAILED (log: $log)"
    exit 1
  fi
  rm -f "$log"
  echo "round $round: $CASES cases per property in $(( $(date +%s) - start )) s"
done
echo "fuzz: $round rounds of $CASES cases per property, no failure"
