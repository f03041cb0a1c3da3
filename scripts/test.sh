#!/usr/bin/env bash
# Runs switchyard's whole test suite: installs missing dependencies (scripts/deps.sh),
# builds the binaries, then runs every unit and integration test with release optimizations
# (the `testing` profile: the release profile without its whole-program pass, which would be
# repeated for every test binary).
#
# Usage: scripts/test.sh [CARGO TEST ARGS...] [-- TEST BINARY ARGS...]
#   scripts/test.sh                          # everything
#   scripts/test.sh --test harness_smoke     # one integration test file
#   scripts/test.sh failover -- --nocapture  # tests whose name contains "failover"
# Exits non-zero if anything fails. Works unattended (CI=true, no stdin).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo_args=()
test_args=()
seen_sep=0
for arg in "$@"; do
    if [ "$seen_sep" -eq 0 ] && [ "$arg" = "--" ]; then
        seen_sep=1
    elif [ "$seen_sep" -eq 0 ]; then
        cargo_args+=("$arg")
    else
        test_args+=("$arg")
    fi
done

start=$(date +%s)
echo "==> scripts/deps.sh"
./scripts/deps.sh </dev/null

echo "==> cargo build --profile testing --bins"
cargo build --profile testing --bins </dev/null

mkdir -p target
log=target/test-output.log
echo "==> cargo test --profile testing --no-fail-fast ${cargo_args[*]:-} -- --test-threads=2 ${test_args[*]:-}"
# A hung test must not use up a CI job's time without a summary: the whole run is bounded
# (every test is bounded on its own; this is the net under them). The test processes' own
# watchdogs stop the servers and proxies they started.
limit=${SWITCHYARD_TEST_TIMEOUT:-60m}
set +e
timeout --kill-after=30s "$limit" \
    cargo test --profile testing --no-fail-fast "${cargo_args[@]}" -- --test-threads=2 "${test_args[@]}" \
    </dev/null 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# Summary over every test binary's "test result:" line.
read -r passed failed ignored binaries < <(
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed/) p += $i
                if ($(i + 1) ~ /^failed/) f += $i
                if ($(i + 1) ~ /^ignored/) g += $i
            }
            n++
        }
        END { printf "%d %d %d %d\n", p, f, g, n }' "$log"
)
elapsed=$(($(date +%s) - start))
echo
echo "==> summary: $binaries test binaries, ${elapsed}s (full output: $log)"
if [ "$failed" -gt 0 ]; then
    echo "failed tests:"
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^test /  /; s/ \.\.\. FAILED$//' || true
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "the tests did not finish within $limit (SWITCHYARD_TEST_TIMEOUT) and were stopped"
elif [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "cargo test exited with status $rc (build error or crashed test binary?)"
fi
echo "tests: $passed passed, $failed failed, $ignored skipped"
exit "$rc"
