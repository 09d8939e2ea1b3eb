#!/usr/bin/env bash
# ringmq performance matrix on this machine.
#
# Builds release, then for every case of the matrix and every repetition starts a
# fresh ringmq pinned to one core (so its peak RSS belongs to that run alone), runs
# ringmq-bench pinned to another core against it, and stops the broker. Writes
#   perf-results/<date>-<host>/raw/<case>-<n>.json   one ringmq-bench report per run
#   perf-results/<date>-<host>/raw/<case>-<n>.txt    its human summary and errors
#   perf-results/<date>-<host>/summary.md            median and spread per case
#   perf-results/<date>-<host>/machine.md            CPU, cores, kernel, load
#
# Usage: scripts/perf-test.sh [--peers] [--duration SECS] [--warmup SECS] [--repeat N]
#                             [--broker-cpu N] [--bench-cpu N] [--out DIR] [--quick]
#
# --peers runs every case against Mosquitto too (Debian's package, installed when
# missing, pinned to the same CPU), and the summary labels rows <broker>/<case>.
# rumqttd is not in the matrix yet: add a case to start_broker and its name to the
# BROKERS that --peers sets.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=10
WARMUP=2
REPEAT=3
BROKER_CPU=0
BENCH_CPU=1
OUT=""
BROKERS=(ringmq)
READY_WAIT_S=20

die() { echo "perf-test: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --broker-cpu) BROKER_CPU=$2; shift 2 ;;
        --bench-cpu) BENCH_CPU=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) DURATION=2; WARMUP=1; REPEAT=1; shift ;;
        --peers) BROKERS=(ringmq mosquitto); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done

# The matrix: label | ringmq-bench arguments.
CASES=(
    "pairs-qos0-max|pairs --pairs 100 --qos 0"
    "pairs-qos1-max|pairs --pairs 100 --qos 1"
    "pairs-qos1-10k|pairs --pairs 1000 --qos 1 --total-rate 10000"
    "fan-in-qos1-10k|fan-in --publishers 100 --subscribers 1 --qos 1 --total-rate 10000"
    "fan-out-1x100|fan-out --publishers 1 --subscribers 100 --qos 0 --total-rate 1000"
    "shared-10x10-qos1|shared --publishers 10 --subscribers 10 --qos 1 --total-rate 10000"
    "connect-5000|connect --connections 5000"
)

cd "$ROOT"
cargo build --release -p ringmq -p ringmq-bench
MOSQUITTO=""
if [ "${#BROKERS[@]}" -gt 1 ]; then
    # Peers run from Debian's packages, installed when missing. rumqttd is not in
    # the matrix yet (it needs `cargo install rumqttd --version 0.20.0` and a config
    # of its own); say so rather than leave it out silently.
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [ ! -x "$MOSQUITTO" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
    fi
    echo "perf-test: peers: mosquitto ($("$MOSQUITTO" -h 2>/dev/null | head -1)); rumqttd not included yet" >&2
fi
BENCH="$ROOT/target/release/ringmq-bench"
BROKER_BIN="$ROOT/target/release/ringmq"

HOST=$(hostname -s 2>/dev/null || hostname)
OUT=${OUT:-"$ROOT/perf-results/$(date -u +%Y-%m-%d)-$HOST"}
mkdir -p "$OUT/raw"
ulimit -n 65536 2>/dev/null || true

BROKER_PID=""
BROKER_ADDR=""
BROKER_LOG=""

# Starts broker $1 on 127.0.0.1 with a free port; sets BROKER_PID and BROKER_ADDR.
start_broker() {
    BROKER_LOG=$(mktemp)
    case "$1" in
        ringmq)
            "$BROKER_BIN" --listen 127.0.0.1:0 --cpus "$BROKER_CPU" --shards 1 --sys-interval 0 --log warn --admin-listen "" \
                >"$BROKER_LOG" 2>&1 &
            BROKER_PID=$!
            local line=""
            for _ in $(seq $((READY_WAIT_S * 10))); do
                line=$(grep -m1 '^ringmq ready' "$BROKER_LOG" || true)
                [ -n "$line" ] && break
                kill -0 "$BROKER_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$line" ] || { cat "$BROKER_LOG" >&2; die "ringmq did not get ready in ${READY_WAIT_S}s"; }
            BROKER_ADDR=$(echo "$line" | sed -E 's/.*listeners=([^ ,]+).*/\1/')
            ;;
        mosquitto)
            local port conf
            port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
            conf=$(mktemp)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000\n' "$port" >"$conf"
            taskset -c "$BROKER_CPU" "$MOSQUITTO" -c "$conf" >"$BROKER_LOG" 2>&1 &
            BROKER_PID=$!
            local up=""
            for _ in $(seq $((READY_WAIT_S * 10))); do
                if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
                kill -0 "$BROKER_PID" 2>/dev/null || break
                sleep 0.1
            done
            [ -n "$up" ] || { cat "$BROKER_LOG" >&2; die "mosquitto did not listen in ${READY_WAIT_S}s"; }
            BROKER_ADDR="127.0.0.1:$port"
            ;;
        *) die "broker $1 is not supported yet" ;;
    esac
}

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
    [ -n "$BROKER_LOG" ] && rm -f "$BROKER_LOG"
    BROKER_LOG=""
}
trap stop_broker EXIT

{
    echo "# Machine"
    echo
    echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
    echo "- host: $HOST"
    echo "- CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
    echo "- cores: $(nproc) online ($(lscpu 2>/dev/null | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
    echo "- memory: $(free -g 2>/dev/null | awk '/^Mem:/{print $2}') GiB"
    echo "- kernel: $(uname -srm)"
    echo "- rustc: $(rustc --version)"
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- pinning: broker on CPU $BROKER_CPU (1 shard), ringmq-bench on CPU $BENCH_CPU"
    echo "- runs: ${DURATION}s measured after ${WARMUP}s warm-up, $REPEAT repetitions per case"
} >"$OUT/machine.md"

FAILED=()
for broker in "${BROKERS[@]}"; do
    for case in "${CASES[@]}"; do
        label=${case%%|*}
        args=${case#*|}
        [ "${#BROKERS[@]}" -gt 1 ] && label="$broker/$label"
        for n in $(seq "$REPEAT"); do
            file="$OUT/raw/${label//\//-}-$n"
            start_broker "$broker"
            echo "== $label run $n/$REPEAT against $broker at $BROKER_ADDR"
            rc=0
            # shellcheck disable=SC2086 # $args is a list of words on purpose
            timeout $((DURATION + WARMUP + 120)) "$BENCH" $args --label "$label" \
                --duration "$DURATION" --warmup "$WARMUP" --cpus "$BENCH_CPU" \
                --host "$BROKER_ADDR" --broker-pid "$BROKER_PID" --json >"$file.json" 2>"$file.txt" || rc=$?
            [ "$rc" -eq 0 ] || FAILED+=("$label run $n (exit $rc)")
            cat "$file.txt"
            stop_broker
        done
    done
done

{
    echo "# ringmq performance, $(date -u +%Y-%m-%d) on $HOST"
    echo
    echo "Median (min-max) of $REPEAT run(s) per case; ${DURATION}s measured after ${WARMUP}s warm-up."
    echo "Latency is end to end from the scheduled send time (open loop) or the send time"
    echo "(max rate). Machine: see machine.md. Raw reports: raw/."
    echo
    "$BENCH" summarize "$OUT"/raw/*.json
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "Runs that exited non-zero (see raw/*.txt):"
        echo
        for f in "${FAILED[@]}"; do echo "- $f"; done
    fi
} >"$OUT/summary.md"

echo "wrote $OUT"
cat "$OUT/summary.md"
