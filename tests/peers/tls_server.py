#!/usr/bin/env python3
"""A mutual-TLS echo server written the way Python tutorials write one, used as a peer by the
interop tests. It serves one connection and exits.

    tls_server.py --port PORT --cert CERT.pem --key KEY.pem --ca CA.pem [--timeout SECONDS]

Prints, one line each, flushed:

    listening 127.0.0.1:PORT
    version: TLSv1.3
    cipher: ('TLS_AES_256_GCM_SHA384', 'TLSv1.3', 256)
    peer-subject: CN=alice
    received: <bytes received, as text>
    closed: clean

It echoes what it receives until the client closes its side (close_notify), then calls
unwrap() so that it sends its own close_notify. On failure it prints `error: ...` and exits 1.
Every socket operation has a timeout, so it never hangs.
"""

import argparse
import socket
import ssl
import sys

sys.dont_write_bytecode = True  # no __pycache__ in tests/peers/ from test runs
from peer_text import subject_text  # noqa: E402  (beside this script)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--ca", required=True, help="CA (PEM) that signs client certificates")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()

    # The tutorial way: a server context that requires a client certificate from our CA.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=args.cert, keyfile=args.key)
    context.load_verify_locations(cafile=args.ca)
    context.verify_mode = ssl.CERT_REQUIRED

    try:
        with socket.create_server((args.host, args.port)) as listener:
            listener.settimeout(args.timeout)
            print(f"listening {args.host}:{args.port}", flush=True)
            conn, _addr = listener.accept()
            conn.settimeout(args.timeout)
            with context.wrap_socket(conn, server_side=True) as tls:
                print("version:", tls.version(), flush=True)
                print("cipher:", tls.cipher(), flush=True)
                print("peer-subject:", subject_text(tls.getpeercert()), flush=True)
                received = b""
                while True:
                    chunk = tls.recv(4096)
                    if not chunk:  # the client's close_notify
                        break
                    received += chunk
                    tls.sendall(chunk)
                print("received:", received.decode(errors="replace"), flush=True)
                tls.unwrap()  # our close_notify
                print("closed: clean", flush=True)
    except (ssl.SSLError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
