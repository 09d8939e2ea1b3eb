#!/usr/bin/env bash
# ringmq performance matrix on this machine, alone or beside Mosquitto and rumqttd.
#
# Builds release, then for every case of the matrix, every broker and every
# repetition starts a fresh broker pinned to one core (so its peak RSS belongs to
# that run alone), runs ringmq-bench pinned to another core against it, and stops
# the broker. Cases run one after the other with every broker inside a case, so a
# change in the machine's load hits every broker alike. Writes
#   perf-results/<date>-<host>/raw/<broker>-<case>-<n>.json   one ringmq-bench report per run
#   perf-results/<date>-<host>/raw/<broker>-<case>-<n>.txt    its human summary and errors
#   perf-results/<date>-<host>/plots/*.svg                    throughput bars, latency curves
#   perf-results/<date>-<host>/cost/*.json                    with --cost: cost-per-message counts
#   perf-results/<date>-<host>/summary.md                     scenario x broker, targets, cost, plots
#   perf-results/<date>-<host>/machine.md                     CPU, cores, kernel, load
#   perf-results/<date>-<host>/order.txt                      the cases in the order they ran
#
# Usage: scripts/perf-test.sh [--peers] [--cost] [--quick] [--duration SECS] [--warmup SECS]
#            [--repeat N] [--mqtt 3|5] [--half-rate MSGS_PER_S] [--cases LIST]
#            [--broker-cpu N] [--bench-cpu N] [--out DIR]
#
# --peers      runs every case against Mosquitto (Debian's package) and rumqttd 0.20.0
#              (cargo install) too, installed when missing, pinned to the same CPU.
# --cost       afterwards runs scripts/cost-per-message.sh into the same folder
#              (instructions and system calls per delivered message).
# --quick      2 s runs after 1 s warm-up, once each: checks the script, not figures.
# --half-rate  the rate of the pairs-qos0-half case; default: half of this run's
#              Mosquitto pairs-qos0-max median (without --peers the case is skipped
#              unless this is given).
# --cases      comma-separated case labels to run (default: all).
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
HALF_RATE=""
ONLY=""
COST=""
MQTT_VERSION=5
QUICK=""

die() { echo "perf-test: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --broker-cpu) BROKER_CPU=$2; shift 2 ;;
        --bench-cpu) BENCH_CPU=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) DURATION=2; WARMUP=1; REPEAT=1; QUICK=1; shift ;;
        --peers) BROKERS=(ringmq mosquitto rumqttd); shift ;;
        --cost) COST=1; shift ;;
        --mqtt) MQTT_VERSION=$2; shift 2 ;;
        --half-rate) HALF_RATE=$2; shift 2 ;;
        --cases) ONLY=",$2,"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
case "$MQTT_VERSION" in 3|5) ;; *) die "--mqtt $MQTT_VERSION: use 3 or 5" ;; esac
# rumqttd refuses keep alive 0 and the generator sends no PINGREQ: the same long
# keep alive for every broker.
KEEP_ALIVE_S=65535

# The matrix: label | ringmq-bench arguments. 100 clients on the publishing side,
# 64-byte payloads (the default), as issue #4 states its targets. The labels are
# the names `ringmq-bench compare` checks the targets by. HALF is replaced by the
# half-of-Mosquitto rate.
CASES=(
    "pairs-qos0-max|pairs --pairs 100 --qos 0"
    "pairs-qos0-half|pairs --pairs 100 --qos 0 --total-rate HALF"
    "fan-in-qos0-max|fan-in --publishers 100 --subscribers 1 --qos 0"
    "pairs-qos1-max|pairs --pairs 100 --qos 1"
    "fan-out-qos0-max|fan-out --publishers 1 --subscribers 100 --qos 0"
    "pairs-qos1-10k|pairs --pairs 100 --qos 1 --total-rate 10000"
    "fan-in-qos1-10k|fan-in --publishers 100 --subscribers 1 --qos 1 --total-rate 10000"
    "shared-qos1-10k|shared --publishers 100 --subscribers 10 --qos 1 --total-rate 10000"
    "fan-out-qos0-10k|fan-out --publishers 1 --subscribers 100 --qos 0 --total-rate 100"
    "connect-5000|connect --connections 5000"
)

cd "$ROOT"
# shellcheck source=scripts/brokers.sh
. "$ROOT/scripts/brokers.sh"
cargo build --release -p ringmq -p ringmq-bench
ensure_peers "${BROKERS[@]}"
BENCH="$ROOT/target/release/ringmq-bench"

HOST=$(hostname -s 2>/dev/null || hostname)
OUT=${OUT:-"$ROOT/perf-results/$(date -u +%Y-%m-%d)-$HOST"}
mkdir -p "$OUT/raw"
ulimit -n 65536 2>/dev/null || true

trap stop_broker EXIT
trap 'stop_broker; exit 130' INT TERM

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
    echo "- pinning: broker on CPU $BROKER_CPU (ringmq: 1 shard), ringmq-bench on CPU $BENCH_CPU"
    echo "- runs: ${DURATION}s measured after ${WARMUP}s warm-up, $REPEAT repetitions per case, MQTT $MQTT_VERSION"
    echo "- brokers: ${BROKERS[*]}"
} >"$OUT/machine.md"

# The median of one number over the JSON reports given (serde_json writes plain
# decimals, so a pattern finds it).
median_of() {
    local field=$1; shift
    sed -n "s/.*\"$field\":\([-0-9.eE+]*\).*/\1/p" "$@" 2>/dev/null | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

FAILED=()
SKIPPED=()
NOTES=()
: >"$OUT/order.txt"
started=$(date +%s)
for case in "${CASES[@]}"; do
    label=${case%%|*}
    args=${case#*|}
    if [ -n "$ONLY" ] && [[ "$ONLY" != *",$label,"* ]]; then continue; fi
    if [[ "$args" == *HALF* ]]; then
        rate=$HALF_RATE
        max=""
        if [ -z "$rate" ]; then
            max=$(median_of received_per_s "$OUT"/raw/mosquitto-pairs-qos0-max-*.json || true)
            [ -n "$max" ] && rate=$(awk -v m="$max" 'BEGIN { printf "%.0f", m / 2 }')
        fi
        if [ -z "$rate" ] || [ "$rate" = 0 ]; then
            SKIPPED+=("$label: no Mosquitto pairs-qos0-max median in this run and no --half-rate")
            continue
        fi
        args=${args//HALF/$rate}
        if [ -n "$HALF_RATE" ]; then
            NOTES+=("$label ran at $rate msgs/s in total (--half-rate).")
        else
            NOTES+=("$label ran at $rate msgs/s in total: half of Mosquitto's pairs-qos0-max median in this run ($max msgs/s).")
        fi
    fi
    echo "$label" >>"$OUT/order.txt"
    for broker in "${BROKERS[@]}"; do
        for n in $(seq "$REPEAT"); do
            file="$OUT/raw/$broker-$label-$n"
            start_broker "$broker"
            echo "== $broker/$label run $n/$REPEAT at $BROKER_ADDR ($(( $(date +%s) - started )) s in)"
            rc=0
            # shellcheck disable=SC2086 # $args is a list of words on purpose
            timeout $((DURATION + WARMUP + 120)) "$BENCH" $args --label "$broker/$label" \
                --mqtt "$MQTT_VERSION" --keep-alive "$KEEP_ALIVE_S" \
                --duration "$DURATION" --warmup "$WARMUP" --cpus "$BENCH_CPU" \
                --host "$BROKER_ADDR" --broker-pid "$BROKER_PID" --json >"$file.json" 2>"$file.txt" || rc=$?
            [ "$rc" -eq 0 ] || FAILED+=("$broker/$label run $n (exit $rc)")
            cat "$file.txt"
            stop_broker
        done
    done
done
echo "perf-test: matrix done in $(( $(date +%s) - started )) s"

if [ -n "$COST" ]; then
    peers=()
    [ "${#BROKERS[@]}" -gt 1 ] && peers=(--peers)
    "$ROOT/scripts/cost-per-message.sh" "${peers[@]}" --out "$OUT" --broker-cpu "$BROKER_CPU" \
        --bench-cpu "$BENCH_CPU" --mqtt "$MQTT_VERSION" ${QUICK:+--quick} \
        || FAILED+=("cost-per-message.sh (see its output)")
fi

"$BENCH" plot --results "$OUT" >/dev/null
{
    echo "# ringmq performance, $(date -u +%Y-%m-%d) on $HOST"
    echo
    if [ -n "$QUICK" ]; then
        echo "**A --quick run: a check of the tooling, one short run per case on a busy machine; not figures to quote.**"
        echo
    fi
    echo "Brokers: ${BROKERS[*]}, each pinned to CPU $BROKER_CPU, fresh for every run; ringmq-bench on CPU $BENCH_CPU."
    echo "Every figure is the median of $REPEAT run(s) of ${DURATION}s after ${WARMUP}s warm-up, MQTT $MQTT_VERSION, 64-byte payloads."
    echo "Latency is end to end from the scheduled send time (open loop) or the send time"
    echo "(max rate, where it describes the buffers, not the broker). Machine: machine.md. Raw reports: raw/."
    echo
    peer_notes "${BROKERS[@]}"
    "$BENCH" compare --results "$OUT"
    for note in "${NOTES[@]}"; do echo "$note"; echo; done
    if [ "${#SKIPPED[@]}" -gt 0 ]; then
        echo "Cases skipped:"
        echo
        for s in "${SKIPPED[@]}"; do echo "- $s"; done
        echo
    fi
    if [ "${#FAILED[@]}" -gt 0 ]; then
        echo "Runs that exited non-zero (see raw/*.txt; exit 1: connection errors, 2: QoS 1/2 loss):"
        echo
        for f in "${FAILED[@]}"; do echo "- $f"; done
    fi
} >"$OUT/summary.md"

echo "wrote $OUT"
cat "$OUT/summary.md"
