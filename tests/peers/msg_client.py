#!/usr/bin/env python3
"""A tlsnet-msg/1 client with only Python's standard library (ssl, socket, struct, json), as
docs/PROTOCOL.md describes the protocol. Used as one of the users in tests/msg.rs.

    msg_client.py HOST PORT --ca CA.pem --cert CERT.pem --key KEY.pem [--timeout S] COMMAND

Commands:
    send --to USER TEXT      send a direct message; prints `id: N` once the server stored it
    receive --count N        print N messages as JSON lines (id, from, to, text), acking each

Prints `user: NAME` (from the server's WELCOME) first. On an ERROR frame it prints
`error: CODE: MESSAGE` and exits 1.
"""

import argparse
import json
import socket
import ssl
import struct
import sys

VERSION = 1
SEND, ACK = 0x01, 0x02
WELCOME, ACCEPTED, DELIVER, ERROR, GOODBYE = 0x81, 0x82, 0x83, 0x87, 0x88


def write_frame(sock, kind, body):
    payload = json.dumps(body).encode()
    sock.sendall(struct.pack(">BBI", VERSION, kind, len(payload)) + payload)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("server closed the connection")
        data += chunk
    return data


def read_frame(sock):
    version, kind, length = struct.unpack(">BBI", read_exact(sock, 6))
    if version != VERSION:
        raise ValueError(f"unknown version {version}")
    return kind, json.loads(read_exact(sock, length))


def fail_on_error(kind, body):
    if kind == ERROR:
        print(f"error: {body['code']}: {body['message']}", flush=True)
        sys.exit(1)
    if kind == GOODBYE:
        print(f"goodbye: {body['reason']}", flush=True)
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--servername", default="localhost")
    parser.add_argument("--timeout", type=float, default=10.0)
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send")
    send.add_argument("--to", required=True)
    send.add_argument("text")
    receive = sub.add_parser("receive")
    receive.add_argument("--count", type=int, required=True)
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["tlsnet-msg/1"])
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as raw:
        with context.wrap_socket(raw, server_hostname=args.servername) as sock:
            kind, body = read_frame(sock)
            fail_on_error(kind, body)
            assert kind == WELCOME, kind
            print(f"user: {body['user']}", flush=True)
            if args.command == "send":
                write_frame(sock, SEND, {"ref": 1, "to": args.to, "text": args.text})
                while True:
                    kind, body = read_frame(sock)
                    fail_on_error(kind, body)
                    if kind == ACCEPTED and body["ref"] == 1:
                        print(f"id: {body['id']}", flush=True)
                        break
            else:
                seen = set()
                while len(seen) < args.count:
                    kind, body = read_frame(sock)
                    fail_on_error(kind, body)
                    if kind != DELIVER:
                        continue  # receipts, presence
                    if body["id"] not in seen:
                        seen.add(body["id"])
                        out = {k: body.get(k) for k in ("id", "seq", "from", "to", "room", "text")}
                        print(json.dumps(out), flush=True)
                    write_frame(sock, ACK, {"ids": [body["id"]]})
            sock.unwrap()  # close_notify


if __name__ == "__main__":
    main()
