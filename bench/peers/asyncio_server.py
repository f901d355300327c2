#!/usr/bin/env python3
"""Python asyncio TLS discard server: the Python peer of tlsnet's benchmark rig (bench/run).

TLS 1.3 only, the same certificate and key as the other servers, client certificates required
when --ca is given. Reads and drops everything until the client closes; stops by itself after
--max-secs.
"""

import argparse
import asyncio
import signal
import ssl


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(256 * 1024):
            pass
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError, OSError):
            pass


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", help="require client certificates signed by this CA")
    p.add_argument("--max-secs", type=float, default=3600)
    a = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(a.cert, a.key)
    if a.ca:
        ctx.load_verify_locations(a.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    host, port = a.listen.rsplit(":", 1)
    server = await asyncio.start_server(handle, host, int(port), ssl=ctx, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        try:
            await asyncio.wait_for(stop.wait(), a.max_secs)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
