#!/usr/bin/env bash
# SMTP intake load benchmark (a script, not a test). Two runs, each against `invited serve`
# (release build, SQLite in a fresh temp folder) and, in the same run, against Postfix's
# smtp-sink (the protocol's upper bound on this machine):
#   1. Postfix's smtp-source: MESSAGES messages of SIZE bytes of filler text (stored, then
#      processed as no_invite_found);
#   2. examples/smtp_invites.rs: MESSAGES distinct invites of about SIZE bytes, each of which
#      becomes a version, a decision and a job (smtp-source can only send filler or the same
#      file's bytes every time, which invited keeps once, as a retried message).
# Prints both rates, their ratio, invited's peak RSS, and how many messages were stored,
# processed and turned into jobs.
#
# usage: [CPUS=LIST] benches/smtp-load.sh [MESSAGES=20000] [SESSIONS=20] [SIZE=8192]
#   CPUS (a taskset list, e.g. 1) pins invited and smtp-sink to those CPUs; the load
#   generators are not pinned. smtp-sink is one single-threaded process, so CPUS=1 compares
#   the two servers on one core each. On a VM where waking a thread on the other core is
#   dear, it also shows what that costs invited (see README, "SMTP intake").
# needs: ../shared/peers (smtp-load.sh installs postfix's tools if missing; run as root then)
set -euo pipefail
MSGS=${1:-20000}; SESS=${2:-20}; SIZE=${3:-8192}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$HERE/../shared/peers
SMTP_PORT=${SMTP_PORT:-12525}; HTTP_PORT=${HTTP_PORT:-18080}; SINK_PORT=${SINK_PORT:-10025}
WORK=$(mktemp -d /tmp/invited-bench.XXXXXX)
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
    "$PEERS/smtp-sink-stop.sh" "$WORK/sink" >/dev/null 2>&1 || true
}
trap cleanup EXIT

cd "$HERE"
cargo build --release --quiet --bin invited --example smtp_invites
RCPT=assistant@example.com

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2; return 1
}
rate() { sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' <<<"$1"; }

# load_smtp_source PORT / load_invites PORT: one load run, its one-line summary on stdout.
load_smtp_source() { TO=$RCPT "$PEERS/smtp-load.sh" 127.0.0.1 "$1" "$MSGS" "$SESS" "$SIZE" reuse; }
load_invites() { "$HERE/target/release/examples/smtp_invites" "127.0.0.1:$1" "$MSGS" "$SESS" "$SIZE" "$RCPT"; }

# run NAME LOADER: LOADER against a fresh `invited serve`, then against smtp-sink.
run() {
    local name=$1 loader=$2 dir=$WORK/$1
    mkdir -p "$dir"
    cat > "$dir/invited.toml" <<TOML
[server]
smtp_listen = "127.0.0.1:$SMTP_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
hostname = "bench.invalid"

[store]
url = "sqlite://$dir/invited.db"

[smtp]
max_commands_per_session = 1000000
max_message_bytes = 1048576

[[tenants]]
id = "bench"
assistant_addresses = ["$RCPT"]
sender_auth = "none"

[[tenants.users]]
email = "alice@acme.com"
seat = true
manual_schedule_upload = true

[tenants.providers.zoom]
enabled = true
TOML
    RUST_LOG=warn ${CPUS:+taskset -c "$CPUS"} "$HERE/target/release/invited" --config "$dir/invited.toml" serve 2>"$dir/invited.log" &
    PID=$!
    wait_port "$SMTP_PORT"
    echo "$name: servers on cpus ${CPUS:-any}; loadavg before: $(cat /proc/loadavg)"
    local invited sink rss_kb stored processed jobs tail_start tail_s
    # A load run that reports failed sessions still prints its line (rc= / failed_sessions=).
    invited=$("$loader" "$SMTP_PORT") || true
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    count() { sqlite3 "$dir/invited.db" "PRAGMA busy_timeout=5000; $1" | tail -1; }
    stored=$(count "SELECT COUNT(*) FROM messages")
    # Processing runs behind the replies: wait (bounded) until it has caught up.
    tail_start=$(date +%s.%N)
    local caught_up=no
    for _ in $(seq 1 600); do
        [ "$(count "SELECT COUNT(*) FROM messages WHERE status <> 'received'")" = "$stored" ] && { caught_up=yes; break; }
        sleep 0.2
    done
    tail_s=$(awk -v s="$tail_start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    processed=$(count "SELECT COUNT(*) FROM messages WHERE status = 'processed'")
    jobs=$(count "SELECT COUNT(*) FROM jobs")
    rss_kb=$(awk -v r="$rss_kb" '/VmHWM/ { print ($2 > r ? $2 : r) }' "/proc/$PID/status")
    kill -TERM "$PID"; wait "$PID" || true; PID=""

    "$PEERS/smtp-sink-start.sh" "$dir/sink" "$SINK_PORT" sink >/dev/null
    [ -n "${CPUS:-}" ] && taskset -a -p -c "$CPUS" "$(cat "$dir/sink/sink.pid")" >/dev/null
    sink=$("$loader" "$SINK_PORT") || true
    "$PEERS/smtp-sink-stop.sh" "$dir/sink" >/dev/null 2>&1 || true

    echo "$name invited:   $invited"
    echo "$name smtp-sink: $sink"
    awk -v n="$name" -v a="$(rate "$invited")" -v b="$(rate "$sink")" -v r="$rss_kb" -v s="$stored" \
        -v p="$processed" -v j="$jobs" -v t="$tail_s" -v c="$caught_up" 'BEGIN {
        printf "%s: invited_msgs_per_s=%d sink_msgs_per_s=%d ratio=%.2f invited_peak_rss_mb=%.1f stored=%d processed=%d jobs=%d processing_tail_s=%s caught_up=%s\n",
        n, a, b, (b > 0 ? a / b : 0), r / 1024, s, p, j, t, c }'
    echo "$name: loadavg after: $(cat /proc/loadavg)"
}

run smtp-source load_smtp_source
run invites load_invites
rm -rf "$WORK"
