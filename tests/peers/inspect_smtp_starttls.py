#!/usr/bin/env python3
"""A tiny STARTTLS server for the `tlsnet inspect --starttls` tests.

Speaks SMTP (or IMAP or POP3) in plain text on 127.0.0.1, upgrades the same socket to TLS
when asked, then waits for the client to close. It prints its port on the first line of
stdout, then one line per connection:

    tls ok, closed without data        the client did the handshake and sent no data
    tls ok, received N bytes of data   the client sent application data (it must not)
    failed: ...                        anything else

Everything is bounded: each socket operation times out after --io-timeout seconds, the
server stops after --connections connections or --lifetime seconds, whichever comes first.
"""

import argparse
import socket
import ssl
import sys
import time


def read_line(conn):
    """Reads one line, byte by byte, so nothing after it (the ClientHello) is consumed."""
    line = b""
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte:
            raise ConnectionError("client closed during the plain-text exchange")
        line += byte
        if len(line) > 4096:
            raise ValueError("line too long")
    return line.decode("utf-8", "replace").rstrip("\r\n")


def smtp(conn, offer_starttls):
    conn.sendall(b"220 localhost ESMTP inspect test\r\n")
    hello = read_line(conn)
    if not hello.upper().startswith(("EHLO", "HELO")):
        raise ValueError(f"expected EHLO, got {hello!r}")
    lines = ["250-localhost greets you", "250-PIPELINING"]
    if offer_starttls:
        lines.append("250-STARTTLS")
    lines.append("250 8BITMIME")
    conn.sendall(("\r\n".join(lines) + "\r\n").encode())
    command = read_line(conn)
    if command.upper() != "STARTTLS" or not offer_starttls:
        conn.sendall(b"502 5.5.1 command not implemented\r\n")
        raise ValueError(f"no STARTTLS: client sent {command!r}")
    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")


def imap(conn, offer_starttls):
    conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] inspect test ready\r\n")
    command = read_line(conn)
    tag, _, verb = command.partition(" ")
    if verb.upper() != "STARTTLS" or not offer_starttls:
        conn.sendall(f"{tag} BAD no STARTTLS here\r\n".encode())
        raise ValueError(f"no STARTTLS: client sent {command!r}")
    conn.sendall(f"{tag} OK Begin TLS negotiation now\r\n".encode())


def pop3(conn, offer_starttls):
    conn.sendall(b"+OK inspect test POP3 ready\r\n")
    command = read_line(conn)
    if command.upper() != "STLS" or not offer_starttls:
        conn.sendall(b"-ERR no STLS here\r\n")
        raise ValueError(f"no STLS: client sent {command!r}")
    conn.sendall(b"+OK Begin TLS negotiation\r\n")


PROTOCOLS = {"smtp": smtp, "imap": imap, "pop3": pop3}


def serve(conn, context, args):
    PROTOCOLS[args.protocol](conn, not args.no_starttls)
    tls = context.wrap_socket(conn, server_side=True)
    received = 0
    try:
        while True:
            data = tls.recv(4096)
            if not data:
                break
            received += len(data)
    except (ssl.SSLError, OSError):
        pass
    if received:
        return f"tls ok, received {received} bytes of data"
    return "tls ok, closed without data"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True, help="certificate chain, PEM, leaf first")
    parser.add_argument("--key", required=True, help="private key, PEM")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="smtp")
    parser.add_argument("--no-starttls", action="store_true", help="do not offer STARTTLS")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--lifetime", type=float, default=30.0)
    parser.add_argument("--io-timeout", type=float, default=10.0)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    print(listener.getsockname()[1], flush=True)

    deadline = time.monotonic() + args.lifetime
    for _ in range(args.connections):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        listener.settimeout(remaining)
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            break
        with conn:
            conn.settimeout(args.io_timeout)
            try:
                print(serve(conn, context, args), flush=True)
            except Exception as e:  # report and go on to the next connection
                print(f"failed: {e}", flush=True)
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
