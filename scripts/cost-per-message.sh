#!/usr/bin/env bash
# Cost per delivered message, independent of how busy the machine is: user-space
# instructions (valgrind --tool=callgrind) and system calls (perf stat on kernel
# tracepoints) of a broker serving QoS 0 pairs.
#
# Method: for each broker and tool, two runs of ringmq-bench with a fixed message
# count (--messages) at max rate, each against a fresh broker started under the
# tool; the count of the larger run minus that of the smaller, divided by the
# difference in messages delivered. Start-up, connecting 200 clients and shutdown
# are the same in both runs and cancel out.
#
# - instructions: callgrind's total Ir over the broker's whole life (all threads);
#   exact and repeatable, whatever else runs. valgrind serialises the broker's
#   threads and slows it ~50x, so the generator stays far ahead and the broker
#   always has a batch waiting: the figure is the cost under load.
# - system calls: `perf stat` on the tracepoints raw_syscalls:sys_enter (every
#   system call, io_uring_enter included), syscalls:sys_enter_io_uring_enter, and
#   io_uring:io_uring_submit_req (one per SQE submitted, i.e. the I/O operations
#   io_uring performs for the broker without a system call of their own). The
#   broker runs at full speed here. (Hardware counters such as instructions:u are
#   not available on this VM; tracepoints are.)
# - wakes: the cost of a message when every message wakes the broker, as in the
#   latency cases: QoS 1 pairs at a fixed --wake-rate (default 10,000 msg/s in
#   total), `perf stat` on the broker's CPU time (task-clock) and on the system
#   calls by name (the tracepoints syscalls:sys_enter_<call> of the calls these
#   brokers make), so the summary shows where a woken broker's time goes.
#
# Writes DIR/cost/<broker>-<tool>-<count>.json (the counts, read by `ringmq-bench
# compare`), and in DIR/cost/raw/ the bench's JSON report and a .txt with its
# summary and the tool's raw output, and <broker>-callgrind-profile.txt: the
# functions that executed the most instructions in the larger callgrind run.
#
# Usage: scripts/cost-per-message.sh [--peers] [--brokers LIST] [--out DIR]
#            [--counts N1,N2] [--perf-counts N1,N2] [--wake-counts N1,N2] [--wake-rate R]
#            [--pairs N] [--mqtt 3|5] [--quick] [--tools callgrind,perf,wakes]
#            [--broker-cpu N] [--bench-cpu N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROKERS=(ringmq)
OUT=""
COUNTS="40000,120000"
PERF_COUNTS="400000,1200000"
WAKE_COUNTS="30000,90000"
WAKE_RATE=10000
PAIRS=100
MQTT_VERSION=5
TOOLS="callgrind,perf,wakes"
BROKER_CPU=0
BENCH_CPU=1
# valgrind starts a broker in seconds, not milliseconds.
READY_WAIT_S=120
# Longest wait for a broker to exit on SIGTERM: callgrind writes its counts at exit.
STOP_WAIT_S=120
# Longest a fixed-count run may send for, and the whole bench run may take.
SEND_LIMIT_S=600
BENCH_LIMIT_S=900

die() { echo "cost-per-message: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --peers) BROKERS=(ringmq mosquitto rumqttd); shift ;;
        --brokers) IFS=, read -r -a BROKERS <<<"$2"; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --counts) COUNTS=$2; shift 2 ;;
        --perf-counts) PERF_COUNTS=$2; shift 2 ;;
        --wake-counts) WAKE_COUNTS=$2; shift 2 ;;
        --wake-rate) WAKE_RATE=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --mqtt) MQTT_VERSION=$2; shift 2 ;;
        --tools) TOOLS=$2; shift 2 ;;
        --quick) COUNTS="10000,30000"; PERF_COUNTS="100000,300000"; WAKE_COUNTS="10000,30000"; shift ;;
        --broker-cpu) BROKER_CPU=$2; shift 2 ;;
        --bench-cpu) BENCH_CPU=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
IFS=, read -r -a COUNT_LIST <<<"$COUNTS"
IFS=, read -r -a PERF_COUNT_LIST <<<"$PERF_COUNTS"
IFS=, read -r -a WAKE_COUNT_LIST <<<"$WAKE_COUNTS"
[ "${#COUNT_LIST[@]}" -ge 2 ] || die "--counts needs two counts, e.g. 40000,120000"
[ "${#PERF_COUNT_LIST[@]}" -ge 2 ] || die "--perf-counts needs two counts"
[ "${#WAKE_COUNT_LIST[@]}" -ge 2 ] || die "--wake-counts needs two counts"

cd "$ROOT"
# shellcheck source=scripts/brokers.sh
. "$ROOT/scripts/brokers.sh"
cargo build --release -p ringmq -p ringmq-bench
BENCH="$ROOT/target/release/ringmq-bench"
ensure_peers "${BROKERS[@]}"
need() {
    command -v "$1" >/dev/null && return 0
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"
    command -v "$1" >/dev/null || die "$1 is missing (apt package $2)"
}
[[ "$TOOLS" == *callgrind* ]] && need valgrind valgrind
[[ "$TOOLS" == *perf* || "$TOOLS" == *wakes* ]] && need perf linux-perf
PERF_EVENTS="raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req"
# The calls ringmq (glommio), Mosquitto (epoll) and rumqttd (tokio) make per message.
WAKE_CALLS=(io_uring_enter recvfrom sendto read write readv writev recvmsg sendmsg
    epoll_wait epoll_pwait epoll_ctl membarrier rt_sigprocmask futex)
WAKE_EVENTS="task-clock,raw_syscalls:sys_enter$(printf ',syscalls:sys_enter_%s' "${WAKE_CALLS[@]}")"
for tool_events in "perf:$PERF_EVENTS" "wakes:$WAKE_EVENTS"; do
    tool=${tool_events%%:*}
    events=${tool_events#*:}
    if [[ "$TOOLS" == *"$tool"* ]] && ! perf stat -x, -e "$events" -- true >/dev/null 2>&1; then
        die "perf cannot read the events $events here (needs root or kernel.perf_event_paranoid <= -1, and tracefs)"
    fi
done

HOST=$(hostname -s 2>/dev/null || hostname)
OUT=${OUT:-"$ROOT/perf-results/$(date -u +%Y-%m-%d)-$HOST"}
mkdir -p "$OUT/cost/raw"
ulimit -n 65536 2>/dev/null || true
# callgrind writes its file as whoever the broker runs as (Mosquitto drops root).
WORK=$(mktemp -d)
chmod 1777 "$WORK"
cleanup() { stop_broker; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# A JSON number of a report: `"key":value` (serde_json writes plain decimals).
json_number() {
    sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" "$2" | head -1
}

# measure BROKER TOOL COUNT: one fixed-count run under TOOL; writes cost/*.json.
measure() {
    local broker=$1 tool=$2 count=$3
    local name="$broker-$tool-$count"
    local report="$OUT/cost/raw/$name.json" log="$OUT/cost/raw/$name.txt" raw="$WORK/$name.out"
    case "$tool" in
        callgrind) BROKER_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$raw") ;;
        perf) BROKER_WRAP=(perf stat -x "," -o "$raw" -e "$PERF_EVENTS" --) ;;
        wakes) BROKER_WRAP=(perf stat -x "," -o "$raw" -e "$WAKE_EVENTS" --) ;;
    esac
    # The wake cost is QoS 1 at a fixed rate; the others QoS 0 flat out.
    local load=(--qos 0) what="QoS 0 pairs at max rate"
    if [ "$tool" = wakes ]; then
        load=(--qos 1 --total-rate "$WAKE_RATE")
        what="QoS 1 pairs at $WAKE_RATE msgs/s"
    fi
    start_broker "$broker"
    echo "== $name: $count messages over $PAIRS $what against $broker at $BROKER_ADDR"
    local rc=0 t0
    t0=$(date +%s)
    timeout "$BENCH_LIMIT_S" "$BENCH" pairs --pairs "$PAIRS" "${load[@]}" --mqtt "$MQTT_VERSION" \
        --messages "$count" --warmup 0 --duration "$SEND_LIMIT_S" --drain 60 --keep-alive 65535 \
        --cpus "$BENCH_CPU" --host "$BROKER_ADDR" --label "$broker/cost-$tool" --json \
        >"$report" 2>"$log" || rc=$?
    stop_broker
    cat "$log"
    [ "$rc" -eq 0 ] || die "$name: ringmq-bench exited $rc (see $log)"
    local delivered sent
    delivered=$(json_number received "$report")
    sent=$(json_number sent "$report")
    [ -n "$delivered" ] || die "$name: no delivery count in $report"
    {
        echo "--- $tool output"
        case "$tool" in
            # The whole callgrind profile is large: its totals here, its top functions
            # in <broker>-callgrind-profile.txt.
            callgrind) grep -E '^(cmd|events|summary|totals):' "$raw" 2>/dev/null ;;
            *) cat "$raw" 2>/dev/null ;;
        esac || echo "(none: the broker did not exit cleanly)"
    } >>"$log"
    local fields=""
    case "$tool" in
        callgrind)
            local ir
            ir=$(sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$raw" 2>/dev/null | head -1)
            [ -n "$ir" ] || die "$name: no callgrind totals in $raw"
            fields="\"instructions\":$ir"
            # Where the instructions go (exclusive, by function), kept beside the counts:
            # the larger run's profile is the one the difference is mostly made of.
            callgrind_annotate --inclusive=no "$raw" 2>/dev/null | head -60 \
                >"$OUT/cost/raw/$broker-callgrind-profile.txt" || true
            ;;
        perf)
            local sys enter sqes
            sys=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$raw")
            enter=$(awk -F, '$3 == "syscalls:sys_enter_io_uring_enter" { print $1 }' "$raw")
            sqes=$(awk -F, '$3 == "io_uring:io_uring_submit_req" { print $1 }' "$raw")
            [ -n "$sys" ] || die "$name: no perf counts in $raw"
            fields="\"syscalls\":$sys,\"io_uring_enter\":${enter:-0},\"sqes\":${sqes:-0}"
            ;;
        wakes)
            local sys cpu_ms calls="" call n
            sys=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$raw")
            cpu_ms=$(awk -F, '$3 == "task-clock" { print $1 }' "$raw")
            [ -n "$sys" ] && [ -n "$cpu_ms" ] || die "$name: no perf counts in $raw"
            for call in "${WAKE_CALLS[@]}"; do
                n=$(awk -F, -v e="syscalls:sys_enter_$call" '$3 == e { print $1 }' "$raw")
                case "$n" in ''|0|*[!0-9]*) continue ;; esac
                calls="$calls${calls:+,}\"$call\":$n"
            done
            fields="\"syscalls\":$sys,\"cpu_ms\":$cpu_ms,\"calls\":{$calls}"
            ;;
    esac
    printf '{"broker":"%s","tool":"%s","messages":%s,"sent":%s,"delivered":%s,"seconds":%s,%s}\n' \
        "$broker" "$tool" "$count" "${sent:-0}" "$delivered" "$(( $(date +%s) - t0 ))" "$fields" \
        >"$OUT/cost/$name.json"
    echo "   $name: delivered $delivered of $sent; $fields"
}

started=$(date +%s)
for broker in "${BROKERS[@]}"; do
    IFS=, read -r -a tools <<<"$TOOLS"
    for tool in "${tools[@]}"; do
        counts=("${COUNT_LIST[@]}")
        [ "$tool" = perf ] && counts=("${PERF_COUNT_LIST[@]}")
        [ "$tool" = wakes ] && counts=("${WAKE_COUNT_LIST[@]}")
        for count in "${counts[@]}"; do
            measure "$broker" "$tool" "$count"
        done
    done
done
BROKER_WRAP=()
echo "cost-per-message: done in $(( $(date +%s) - started )) s; per message:"
"$BENCH" compare --results "$OUT" | sed -n '/^## Cost per delivered message/,/^## Plots/p' | sed '$d'
