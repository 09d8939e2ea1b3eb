# shellcheck shell=bash disable=SC2034 # BROKER_* are read by the scripts that source this
# Starting and stopping the brokers that scripts/perf-test.sh and
# scripts/cost-per-message.sh compare: ringmq, Mosquitto and rumqttd, each fresh,
# each pinned to $BROKER_CPU, on a free loopback port. Sourced, not run.
#
# The caller sets ROOT, BROKER_CPU and READY_WAIT_S, defines die(), and may set
# BROKER_WRAP (an array: a command the broker runs under, e.g. valgrind or perf
# stat). start_broker sets BROKER_PID (the process to signal and whose /proc to
# read), BROKER_ADDR and BROKER_WRAP_PID (the wrapper's pid when there is one).
#
# How each peer is configured, and why (written into every summary by
# peer_notes):
# - Mosquitto (Debian's package): one listener, anonymous, everything else at its
#   defaults (max_queued_messages 1000, max_inflight_messages 20, no connection
#   limit, no payload limit).
# - rumqttd 0.20.0 (`cargo install`): the listener the bench's --mqtt needs (v4 for
#   3.1.1, v5 for 5) on a free port, the default router and connection settings of
#   its shipped rumqttd.toml, except: no console, Prometheus or WebSocket listeners
#   (their fixed ports would collide), and next_connection_delay_ms = 0 (the shipped
#   1 ms sleep after every accept caps a connect storm at 1000 connections/s).

RUMQTTD_VERSION=0.20.0
[ -n "${BROKER_WRAP+set}" ] || BROKER_WRAP=()
BROKER_PID=""
BROKER_WRAP_PID=""
BROKER_ADDR=""
BROKER_LOG=""
BROKER_CONF=""
MOSQUITTO=""
RUMQTTD=""
MQTT_VERSION=${MQTT_VERSION:-5}

# Installs the peers named in "$@" when missing: Mosquitto from Debian, rumqttd
# with cargo (ringmq is built by the caller).
ensure_peers() {
    local b
    for b in "$@"; do
        case "$b" in
            mosquitto) ensure_mosquitto ;;
            rumqttd) ensure_rumqttd ;;
        esac
    done
}

ensure_mosquitto() {
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [ ! -x "$MOSQUITTO" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
    fi
    [ -x "$MOSQUITTO" ] || die "mosquitto is not installed and could not be"
}

ensure_rumqttd() {
    RUMQTTD=$(command -v rumqttd || echo "${CARGO_HOME:-$HOME/.cargo}/bin/rumqttd")
    if ! "$RUMQTTD" --version 2>/dev/null | grep -q "$RUMQTTD_VERSION"; then
        echo "perf: installing rumqttd $RUMQTTD_VERSION (cargo install; 10-30 minutes on 2 busy cores)" >&2
        # Its lock file does not build on every toolchain: fall back to resolving.
        cargo install rumqttd --version "$RUMQTTD_VERSION" --locked \
            || cargo install rumqttd --version "$RUMQTTD_VERSION" \
            || die "cargo install rumqttd --version $RUMQTTD_VERSION failed"
        RUMQTTD="${CARGO_HOME:-$HOME/.cargo}/bin/rumqttd"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts a connection, or the broker died, or time is up.
wait_listening() {
    local port=$1
    for _ in $(seq $((READY_WAIT_S * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Runs "$@" pinned to $BROKER_CPU (under BROKER_WRAP, pinned too) in the
# background; sets BROKER_PID to the broker itself.
launch() {
    if [ "${#BROKER_WRAP[@]}" -gt 0 ]; then
        taskset -c "$BROKER_CPU" "${BROKER_WRAP[@]}" "$@" >"$BROKER_LOG" 2>&1 &
        BROKER_WRAP_PID=$!
        # valgrind runs the program in its own process; perf forks it as a child.
        BROKER_PID=""
        for _ in $(seq 100); do
            case "${BROKER_WRAP[0]}" in
                valgrind) BROKER_PID=$BROKER_WRAP_PID ;;
                *) BROKER_PID=$(pgrep -P "$BROKER_WRAP_PID" | head -1 || true) ;;
            esac
            [ -n "$BROKER_PID" ] && break
            sleep 0.1
        done
        [ -n "$BROKER_PID" ] || die "the wrapped broker did not start: $(cat "$BROKER_LOG")"
        if [ "$BROKER_PID" = "$BROKER_WRAP_PID" ]; then BROKER_WRAP_PID=""; fi
    else
        taskset -c "$BROKER_CPU" "$@" >"$BROKER_LOG" 2>&1 &
        BROKER_PID=$!
        BROKER_WRAP_PID=""
    fi
}

# Starts broker $1 (ringmq, mosquitto or rumqttd) on 127.0.0.1 with a free port.
start_broker() {
    BROKER_LOG=$(mktemp)
    local port
    port=$(free_port)
    case "$1" in
        ringmq)
            launch "$ROOT/target/release/ringmq" --listen "127.0.0.1:$port" --cpus "$BROKER_CPU" \
                --shards 1 --sys-interval 0 --log warn --admin-listen ""
            ;;
        mosquitto)
            BROKER_CONF=$(mktemp --suffix=.conf)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$BROKER_CONF"
            # Run as root, Mosquitto drops to its own user; callgrind then cannot
            # write its counts at exit, so under a tool it stays root.
            [ "${#BROKER_WRAP[@]}" -gt 0 ] && echo "user root" >>"$BROKER_CONF"
            chmod 644 "$BROKER_CONF"
            launch "$MOSQUITTO" -c "$BROKER_CONF"
            ;;
        rumqttd)
            local v4=$port v5
            v5=$(free_port)
            [ "$MQTT_VERSION" = 5 ] && port=$v5
            BROKER_CONF=$(mktemp --suffix=.toml)
            rumqttd_config "$v4" "$v5" >"$BROKER_CONF"
            launch "$RUMQTTD" --quiet --config "$BROKER_CONF"
            ;;
        *) die "unknown broker $1 (ringmq, mosquitto, rumqttd)" ;;
    esac
    # Under valgrind a start takes many seconds.
    if ! wait_listening "$port"; then
        cat "$BROKER_LOG" >&2
        die "$1 did not listen on 127.0.0.1:$port in ${READY_WAIT_S}s"
    fi
    BROKER_ADDR="127.0.0.1:$port"
}

# rumqttd's shipped settings (rumqttd.toml of 0.20.0), on loopback ports, with the
# changes peer_notes lists.
rumqttd_config() {
    cat <<EOF
id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$1"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true

[v5.1]
name = "v5-1"
listen = "127.0.0.1:$2"
next_connection_delay_ms = 0
    [v5.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
EOF
}

# Stops the broker (SIGTERM, then SIGKILL after STOP_WAIT_S, default 30 s) and its
# wrapper; waits for both.
stop_broker() {
    local ticks=$(( ${STOP_WAIT_S:-30} * 10 ))
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq "$ticks"); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if [ -n "$BROKER_WRAP_PID" ]; then
        for _ in $(seq "$ticks"); do
            kill -0 "$BROKER_WRAP_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$BROKER_WRAP_PID" 2>/dev/null || true
        wait "$BROKER_WRAP_PID" 2>/dev/null || true
    fi
    BROKER_PID=""
    BROKER_WRAP_PID=""
    [ -n "$BROKER_LOG" ] && rm -f "$BROKER_LOG"
    [ -n "$BROKER_CONF" ] && rm -f "$BROKER_CONF"
    BROKER_LOG=""
    BROKER_CONF=""
}

broker_version() {
    case "$1" in
        ringmq) echo "ringmq $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" ;;
        mosquitto) "$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/ running on.*//' ;;
        rumqttd) "$RUMQTTD" --version 2>/dev/null | head -1 ;;
    esac
}

# How each broker ran, for the summary.
peer_notes() {
    echo "## Brokers as run"
    echo
    for b in "$@"; do
        case "$b" in
            ringmq) echo "- $(broker_version ringmq): \`--shards 1 --cpus $BROKER_CPU\`, defaults otherwise (max_inflight 64, max_queued_messages 1000 per session, max_connections 100000)." ;;
            mosquitto) echo "- $(broker_version mosquitto): one listener, \`allow_anonymous true\`, defaults otherwise: max_inflight_messages 20 (outgoing QoS 1/2 window per client), max_queued_messages 1000 (beyond, QoS 0 and queued messages are dropped), no connection or payload limit. One thread." ;;
            rumqttd) echo "- $(broker_version rumqttd): its shipped rumqttd.toml (router max_connections 10010, max_segment_size 100 MiB x 10 segments per filter, max_payload_size 20480, max_inflight_count 100), listener v$([ "$MQTT_VERSION" = 5 ] && echo 5 || echo 4) for MQTT $MQTT_VERSION, without console, Prometheus and WebSocket listeners, and next_connection_delay_ms = 0 (shipped: 1 ms after every accept, a cap of 1000 connections/s). Its \`max_inflight_count\` is not an inflight window: it is how many packets a connection reads before handing them to the router; the outgoing QoS 1/2 window is fixed at 100 in its code. Its threads (router, tokio workers) all share CPU $BROKER_CPU." ;;
        esac
    done
    echo
}
