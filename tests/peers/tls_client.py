#!/usr/bin/env python3
"""A TLS client written the way Python tutorials write one, used as a peer by the interop tests.

    tls_client.py HOST PORT --ca CA.pem [--cert CERT.pem --key KEY.pem] [--servername NAME]
                  [--message TEXT] [--timeout SECONDS]

Connects, verifies the server against --ca and the name, sends the message, reads the same
number of bytes back and prints what happened, one `key: value` line each:

    version: TLSv1.3
    cipher: ('TLS_AES_256_GCM_SHA384', 'TLSv1.3', 256)
    peer: CN=localhost
    echo: <what came back>

On failure it prints `error: <ExceptionType>: <message>` and exits 1. Every socket operation
has a timeout, so it never hangs.
"""

import argparse
import socket
import ssl
import sys

sys.dont_write_bytecode = True  # no __pycache__ in tests/peers/ from test runs
from peer_text import subject_text  # noqa: E402  (beside this script)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--ca", required=True, help="CA certificates (PEM) to trust")
    parser.add_argument("--cert", help="client certificate chain (PEM)")
    parser.add_argument("--key", help="client private key (PEM)")
    parser.add_argument("--servername", default="localhost")
    parser.add_argument("--message", default="hello from python")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    # The tutorial way: a default context that trusts our CA, plus a client certificate.
    context = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        context.load_cert_chain(certfile=args.cert, keyfile=args.key)

    data = args.message.encode()
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
            sock.settimeout(args.timeout)
            with context.wrap_socket(sock, server_hostname=args.servername) as tls:
                print("version:", tls.version(), flush=True)
                print("cipher:", tls.cipher(), flush=True)
                print("peer:", subject_text(tls.getpeercert()), flush=True)
                # In TLS 1.3 a server that rejects our certificate says so after our side of
                # the handshake is done: the alert shows up here, on recv.
                tls.sendall(data)
                received = b""
                while len(received) < len(data):
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                print("echo:", received.decode(errors="replace"), flush=True)
                if received != data:
                    print("error: echo differs from what was sent", flush=True)
                    return 1
    except (ssl.SSLError, ssl.CertificateError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
