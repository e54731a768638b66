#!/usr/bin/env bash
# SMTP intake load benchmark (a script, not a test): Postfix's smtp-source sends MESSAGES
# messages of SIZE bytes over SESSIONS sessions to `invited serve` (release build, SQLite in
# a temp folder), then, in the same run, to Postfix's smtp-sink (the protocol's upper bound on
# this machine). Prints both rates, their ratio, invited's peak RSS, and how many messages
# were stored and processed.
#
# usage: benches/smtp-load.sh [MESSAGES=20000] [SESSIONS=20] [SIZE=8192]
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
cargo build --release --quiet
cat > "$WORK/invited.toml" <<TOML
[server]
smtp_listen = "127.0.0.1:$SMTP_PORT"
http_listen = "127.0.0.1:$HTTP_PORT"
hostname = "bench.invalid"

[store]
url = "sqlite://$WORK/invited.db"

[smtp]
max_commands_per_session = 1000000
max_message_bytes = 1048576

[[tenants]]
id = "bench"
assistant_addresses = ["assistant@example.com"]
TOML

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2; return 1
}

RUST_LOG=warn "$HERE/target/release/invited" --config "$WORK/invited.toml" serve 2>"$WORK/invited.log" &
PID=$!
wait_port "$SMTP_PORT"
echo "loadavg before: $(cat /proc/loadavg)"
INVITED=$(TO=assistant@example.com "$PEERS/smtp-load.sh" 127.0.0.1 "$SMTP_PORT" "$MSGS" "$SESS" "$SIZE" reuse)
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
count() { sqlite3 "$WORK/invited.db" "PRAGMA busy_timeout=5000; $1" | tail -1; }
STORED=$(count "SELECT COUNT(*) FROM messages")
# Processing runs behind the replies: wait (bounded) until it has caught up.
for _ in $(seq 1 600); do
    [ "$(count "SELECT COUNT(*) FROM messages WHERE status <> 'received'")" = "$STORED" ] && break
    sleep 0.5
done
PROCESSED=$(count "SELECT COUNT(*) FROM messages WHERE status = 'processed'")
kill -TERM "$PID"; wait "$PID" || true; PID=""

"$PEERS/smtp-sink-start.sh" "$WORK/sink" "$SINK_PORT" sink >/dev/null
SINK=$("$PEERS/smtp-load.sh" 127.0.0.1 "$SINK_PORT" "$MSGS" "$SESS" "$SIZE" reuse)
"$PEERS/smtp-sink-stop.sh" "$WORK/sink" >/dev/null 2>&1 || true

rate() { sed -n 's/.*msgs_per_s=\([0-9]*\).*/\1/p' <<<"$1"; }
echo "invited:   $INVITED"
echo "smtp-sink: $SINK"
awk -v a="$(rate "$INVITED")" -v b="$(rate "$SINK")" -v r="$RSS_KB" -v s="$STORED" -v p="$PROCESSED" 'BEGIN {
    printf "invited_msgs_per_s=%d sink_msgs_per_s=%d ratio=%.2f invited_peak_rss_mb=%.1f stored=%d processed=%d\n",
    a, b, (b > 0 ? a / b : 0), r / 1024, s, p }'
echo "loadavg after: $(cat /proc/loadavg)"
rm -rf "$WORK"
