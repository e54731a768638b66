#!/usr/bin/env bash
# Instructions per message of extract + normalise (a script, not a test), counted by
# callgrind so that the figure does not depend on what else the machine runs: the
# `extract_loop` example runs 1 and 1+N times; the difference over N is one message.
#
# usage: benches/extract-callgrind.sh [N=20] [MAIL=tests/fixtures/bench/outlook365-teams-request.eml]
# needs: valgrind
set -euo pipefail
N=${1:-20}
HERE=$(cd "$(dirname "$0")/.." && pwd)
MAIL=${2:-$HERE/tests/fixtures/bench/outlook365-teams-request.eml}
cd "$HERE"
cargo build --release --quiet --example extract_loop
BIN=target/release/examples/extract_loop
WORK=$(mktemp -d /tmp/invited-callgrind.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
count() {
    valgrind --tool=callgrind --callgrind-out-file="$WORK/out.$1" "$BIN" "$1" "$MAIL" >/dev/null 2>&1
    awk '/^summary:/ {print $2}' "$WORK/out.$1"
}
ONE=$(count 1)
MANY=$(count $((N + 1)))
echo "instructions per message: $(( (MANY - ONE) / N ))  ($(basename "$MAIL"), callgrind, N=$N)"
