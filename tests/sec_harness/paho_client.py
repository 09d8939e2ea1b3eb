#!/usr/bin/env python3
"""One paho-mqtt client for the security tests, driven by its arguments.

It connects (WebSocket by default, TLS with --ca), subscribes to every --sub in
one SUBSCRIBE, waits for a line on stdin if --wait-stdin (so the test can
publish from elsewhere first), publishes every --pub, then waits for --expect
messages. Each step is one JSON object per line on stdout:

  {"event": "connack", "rc": N}
  {"event": "suback", "codes": [N, ...]}
  {"event": "published", "topic": T}
  {"event": "message", "topic": T, "payload": P, "qos": Q, "retain": R}
  {"event": "done"} or {"event": "error", "why": W}

Exit status 0 after "done", 1 after "error". Every wait is bounded by --timeout.
"""

import argparse
import json
import sys
import threading

import paho.mqtt.client as mqtt


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def code_of(value):
    # MQTT 5 callbacks give ReasonCodes objects, 3.1.1 ones plain integers.
    return int(getattr(value, "value", value))


def split_arg(text, parts):
    fields = text.split("@", parts - 1)
    if len(fields) != parts:
        raise SystemExit(f"bad argument {text!r}")
    return fields


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=["websockets", "tcp"], default="websockets")
    p.add_argument("--path", default="/mqtt")
    p.add_argument("--ca", help="trust only this CA file and speak TLS")
    p.add_argument("--version", type=int, choices=[4, 5], default=4)
    p.add_argument("--client-id", required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--sub", action="append", default=[], help="FILTER@QOS")
    p.add_argument("--pub", action="append", default=[], help="TOPIC@QOS@PAYLOAD")
    p.add_argument("--wait-stdin", action="store_true")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    protocol = mqtt.MQTTv5 if args.version == 5 else mqtt.MQTTv311
    client = mqtt.Client(client_id=args.client_id, protocol=protocol, transport=args.transport)
    if args.transport == "websockets":
        client.ws_set_options(path=args.path)
    if args.ca:
        client.tls_set(ca_certs=args.ca)
    if args.user is not None:
        client.username_pw_set(args.user, args.password)

    connected = threading.Event()
    subscribed = threading.Event()
    published = threading.Semaphore(0)
    received = threading.Semaphore(0)
    connack = {}

    def on_connect(_client, _userdata, _flags, rc, _properties=None):
        connack["rc"] = code_of(rc)
        emit(event="connack", rc=connack["rc"])
        connected.set()

    def on_subscribe(_client, _userdata, _mid, codes, _properties=None):
        emit(event="suback", codes=[code_of(c) for c in codes])
        subscribed.set()

    def on_publish(_client, _userdata, _mid):
        published.release()

    def on_message(_client, _userdata, msg):
        emit(
            event="message",
            topic=msg.topic,
            payload=msg.payload.decode("utf-8", "replace"),
            qos=msg.qos,
            retain=bool(msg.retain),
        )
        received.release()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message

    def fail(why):
        emit(event="error", why=why)
        client.loop_stop()
        sys.exit(1)

    try:
        client.connect(args.host, args.port, keepalive=30)
    except Exception as e:  # the handshake (TLS, HTTP upgrade) failed
        fail(f"connect: {e!r}")
    client.loop_start()
    if not connected.wait(args.timeout):
        fail("no CONNACK")
    if connack["rc"] != 0:
        fail(f"refused: {connack['rc']}")

    if args.sub:
        subs = []
        for text in args.sub:
            topic, qos = split_arg(text, 2)
            subs.append((topic, int(qos)))
        client.subscribe(subs)
        if not subscribed.wait(args.timeout):
            fail("no SUBACK")

    if args.wait_stdin:
        if not sys.stdin.readline():
            fail("stdin closed")

    for text in args.pub:
        topic, qos, payload = split_arg(text, 3)
        client.publish(topic, payload, qos=int(qos))
        if not published.acquire(timeout=args.timeout):
            fail(f"publish to {topic} not completed")
        emit(event="published", topic=topic)

    for _ in range(args.expect):
        if not received.acquire(timeout=args.timeout):
            fail("fewer messages than expected")

    client.disconnect()
    client.loop_stop()
    emit(event="done")


if __name__ == "__main__":
    main()
