#!/usr/bin/env python3
"""One bulk stream from Python's `ssl` module: the client style of the seeds (and of many
users' scripts), as a second sender next to the rig's load generator (bench/run).

Connects with TLS 1.3 and certificate verification, sends --bytes in `sendall` calls of
--chunk bytes, sends close_notify, waits for the server to close, and prints one JSON line
with the wall rate and the server's CPU (utime + stime of --pid and its descendants, read from
/proc right around the transfer, as the load generator does). Bounded by --max-secs.
"""

import argparse
import json
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procstat import tree_cpu  # noqa: E402  (bench/procstat.py, as the driver measures)



def main():
    p = argparse.ArgumentParser()
    p.add_argument("--connect", required=True, help="HOST:PORT")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--ca", required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--max-secs", type=float, default=120)
    a = p.parse_args()
    host, port = a.connect.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection((host, int(port)), timeout=a.max_secs)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tls = ctx.wrap_socket(raw, server_hostname=a.server_name)
    suite = (tls.cipher() or ("",))[0]
    # Not all zeros, like the load generator's.
    chunk = bytes((i * 7 + i // 251) & 0xFF for i in range(a.chunk))
    view = memoryview(chunk)
    cpu0, client0, t0 = tree_cpu(a.pid), time.process_time(), time.perf_counter()
    left = a.bytes
    while left > 0:
        n = min(left, len(chunk))
        tls.sendall(view[:n])
        left -= n
    # close_notify, then wait for the server to close: it has read everything by then.
    try:
        raw = tls.unwrap()
    except (ssl.SSLError, OSError):
        pass
    try:
        while raw.recv(65536):
            pass
    except OSError:
        pass
    wall = time.perf_counter() - t0
    server_cpu = tree_cpu(a.pid) - cpu0
    mb = a.bytes / 1e6
    print(json.dumps({
        "mode": "python-ssl-bulk",
        "bytes": a.bytes,
        "chunk": a.chunk,
        "suite": suite,
        "wall_secs": wall,
        "wall_mb_per_sec": mb / wall,
        "server_cpu_secs": server_cpu,
        "mb_per_server_cpu_sec": mb / server_cpu if server_cpu > 0 else 0.0,
        "client_cpu_secs": time.process_time() - client0,
        "python": sys.version.split()[0] + ", " + ssl.OPENSSL_VERSION,
    }))


if __name__ == "__main__":
    main()
