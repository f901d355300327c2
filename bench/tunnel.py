"""The rig's tunnel section (issue 9): `tlsnet tunnel server` against nginx stream and stunnel,
each a mutual-TLS tunnel in front of the rig's plain TCP backends, and a second bulk sender
(Python's `ssl`) in the discard bulk rows, against tlsnet serve and openssl s_server.

Called by bench/driver.py: `rows()` where the table's rows are laid out, `run()` after the
main cases (it needs the rig's sink), `targets()` from the Targets list.

Tunnel rows, all mutual TLS (a tunnel's use), every system started fresh for each run:
- bulk: one stream through the tunnel to the discard sink (wall MB/s and MB per server CPU-s);
- new tunnelled connections per server CPU-second: handshake, one byte sent and echoed back
  through the tunnel by the echo backend (so the backend connection is made and used), close;
- added round-trip latency: 64-byte echoes through the tunnel, p50 and p99, minus those of a
  plain TCP connection to the same echo backend measured right before (the note says how much);
- RSS per idle tunnelled connection (handshake done, backend connected, no traffic).

The backends (the rig's sink, and a second `tlsnet-loadgen sink --echo`) are not counted in
any CPU or memory figure.
"""

import json
import subprocess
import sys
from pathlib import Path

TUNNEL_SYSTEMS = ["tlsnet", "nginx", "stunnel"]
SENDER_SYSTEMS = ["tlsnet", "openssl"]
# (row key, label, sendall size)
SENDERS = [("py1m", "Python ssl, 1 MiB sendall", 1 << 20), ("py16k", "Python ssl, 16 KiB sendall", 16 << 10)]

TARGET_BULK_CPU_VS_NGINX = 1.5
TARGET_BULK_WALL_VS_STUNNEL = 2.0
TARGET_CONNS_VS_NGINX = 2.0
TARGET_IDLE_VS_NGINX = 0.5


def _driver():
    """The driver's helpers (spawn, stop, wait_port, Instance), from the running driver."""
    main = sys.modules.get("__main__")
    if main is not None and hasattr(main, "spawn") and hasattr(main, "Rig"):
        return main
    import driver  # noqa: PLC0415 (when imported from elsewhere)
    return driver


def settings(quick):
    return {
        "conns": 200 if quick else 2000,
        "conn_concurrency": 16,
        "round_trips": 2000 if quick else 10000,
        "idle": 200 if quick else 2000,
    }


def rows(res, systems, quick, bulk_bytes):
    """Lays out the sender rows (in the bulk section) and the tunnel rows."""
    for key, label, _ in SENDERS:
        res.row(f"bulk/{key}/cpu", "bulk", f"bulk {bulk_bytes >> 20} MiB, 1 stream, {label}", "per server CPU",
                "MB/CPU-s", "higher")
    s = settings(quick)
    tlabel = f"tunnel, mutual TLS, {bulk_bytes >> 20} MiB to a plain TCP sink"
    res.row("tunnel/bulk/wall", "tunnel", tlabel, "wall", "MB/s", "higher")
    res.row("tunnel/bulk/cpu", "tunnel", tlabel, "per server CPU", "MB/CPU-s", "higher")
    res.row("tunnel/conns/cpu", "tunnel",
            f"tunnel, new mutual-TLS connections, 1 byte echoed, {s['conn_concurrency']} clients",
            "per server CPU", "conns/CPU-s", "higher")
    llabel = "tunnel, round trip added to a direct connection, 64-byte echoes"
    res.row("tunnel/lat/p50", "tunnel", llabel, "p50 added", "us", "lower")
    res.row("tunnel/lat/p99", "tunnel", llabel, "p99 added", "us", "lower")
    res.row("tunnel/idle/kib", "tunnel", f"tunnel, idle mutual-TLS connections, {s['idle']:,} asked",
            "RSS per connection", "KiB", "lower")
    for sys_ in systems:
        if sys_ not in SENDER_SYSTEMS:
            for key, _, _ in SENDERS:
                res.add(f"bulk/{key}/cpu", sys_, note="n/a")
        if sys_ not in TUNNEL_SYSTEMS:
            for rid in ("tunnel/bulk/wall", "tunnel/bulk/cpu", "tunnel/conns/cpu", "tunnel/lat/p50",
                        "tunnel/lat/p99", "tunnel/idle/kib"):
                res.add(rid, sys_, note="n/a: not a tunnel" if sys_ == "openssl" else "n/a")


class Tunnel:
    """A running tunnel system: `ports[name]` and `insts[name]` for the "sink" and "echo" backends."""

    def __init__(self):
        self.ports = {}
        self.insts = {}

    def stop(self):
        for inst in {id(i): i for i in self.insts.values()}.values():
            inst.stop()


def start_echo(rig):
    d = _driver()
    port = rig.ports.take()
    proc = d.spawn([str(rig.bin / "tlsnet-loadgen"), "sink", "--echo", "--listen", f"127.0.0.1:{port}",
                    "--max-secs", str(rig.max_server_secs)],
                   rig.work / "echo-backend.log", rig.max_server_secs + 10)
    d.wait_port(port, proc)
    return proc, port


def start_tunnel(rig, system, echo_port):
    """`system` as a mutual-TLS tunnel to the sink and to the echo backend."""
    d = _driver()
    cert, key, ca = rig.cert()
    t = Tunnel()
    backends = {"sink": rig.sink_port, "echo": echo_port}
    if system == "tlsnet":
        # One process per tunnel (the --config file would run both in one; the figures are
        # per process either way).
        for name, backend in backends.items():
            port = rig.ports.take()
            cmd = [str(rig.bin / "tlsnet"), "tunnel", "server", "--listen", f"127.0.0.1:{port}",
                   "--target", f"127.0.0.1:{backend}", "--cert", cert, "--key", key, "--client-ca", ca,
                   "--allow-all", "--idle-timeout", "0", "--max-connections", "100000"]
            proc = d.spawn(cmd, rig.work / f"tunnel-tlsnet-{name}.log", rig.max_server_secs)
            d.wait_port(port, proc)
            t.ports[name], t.insts[name] = port, d.Instance(proc, port)
    elif system == "nginx":
        dd = rig.work / "nginx-tunnel"
        dd.mkdir(exist_ok=True)
        conf = dd / "nginx.conf"
        module = "/usr/lib/nginx/modules/ngx_stream_module.so"
        load = f"load_module {module};" if Path(module).exists() else ""
        servers = ""
        for name, backend in backends.items():
            t.ports[name] = rig.ports.take()
            servers += (f"    server {{ listen 127.0.0.1:{t.ports[name]} ssl reuseport; "
                        f"proxy_pass 127.0.0.1:{backend}; }}\n")
        conf.write_text(f"""
{load}
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile {rig.fd_limit};
pid {dd}/nginx.pid;
error_log {dd}/error.log warn;
events {{ worker_connections 65535; }}
stream {{
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    ssl_verify_client on; ssl_client_certificate {ca}; ssl_verify_depth 2;
{servers}}}
""")
        proc = d.spawn([rig.a.nginx, "-p", str(dd), "-c", str(conf), "-e", str(dd / "error.log")],
                       rig.work / "tunnel-nginx.log", rig.max_server_secs)
        for name in backends:
            d.wait_port(t.ports[name], proc)
            t.insts[name] = d.Instance(proc, t.ports[name])
    elif system == "stunnel":
        conf = rig.work / "stunnel-tunnel.conf"
        text = f"foreground = yes\npid =\ndebug = 3\noutput = {rig.work}/stunnel-tunnel.out\n"
        for name, backend in backends.items():
            t.ports[name] = rig.ports.take()
            text += (f"[{name}]\naccept = 127.0.0.1:{t.ports[name]}\nconnect = 127.0.0.1:{backend}\n"
                     f"cert = {cert}\nkey = {key}\nsslVersionMin = TLSv1.3\nsslVersionMax = TLSv1.3\n"
                     f"CAfile = {ca}\nverifyChain = yes\nrequireCert = yes\n")
        conf.write_text(text)
        proc = d.spawn([rig.a.stunnel, str(conf)], rig.work / "tunnel-stunnel.log", rig.max_server_secs)
        for name in backends:
            d.wait_port(t.ports[name], proc)
            t.insts[name] = d.Instance(proc, t.ports[name])
    else:
        raise ValueError(system)
    return t


def python_sender(rig, inst, port, nbytes, chunk, max_secs):
    """One Python-ssl bulk stream into `inst`; the sender's JSON, or {"error": ...}."""
    cmd = [rig.a.python, str(Path(__file__).parent / "peers" / "ssl_sender.py"), "--connect",
           f"127.0.0.1:{port}", "--ca", rig.cert()[2], "--bytes", str(nbytes), "--chunk", str(chunk),
           "--pid", str(inst.proc.pid), "--max-secs", str(max_secs)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=max_secs + 30)
    except subprocess.TimeoutExpired:
        return {"error": "Python sender timed out"}
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        return {"error": (lines[-1:] or [f"exit {r.returncode}"])[0]}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rig.samples.append({"system": rig.current, "port": port, "args": cmd[2:], **out})
    return out


def run(rig, res, systems, quick, runs, bulk_bytes, log):
    """Runs the sender and tunnel cases, `runs` times each, interleaved across systems."""
    s = settings(quick)
    bulk_secs = 120 if quick else 300
    echo_proc, echo_port = start_echo(rig)
    try:
        for run_ in range(runs):
            for system in [x for x in SENDER_SYSTEMS if x in systems]:
                log(f"run {run_ + 1}/{runs}: {system} (Python ssl sender)")
                rig.current = f"{system}/python-ssl-sender/run{run_ + 1}"
                try:
                    inst = rig.start(system, False)
                except Exception as e:  # a peer that cannot start leaves its cells empty
                    log(f"  cannot start {system}: {e}")
                    continue
                try:
                    for key, label, chunk in SENDERS:
                        if system == "openssl" and key != SENDERS[0][0]:
                            # s_server serves one connection and then needs a fresh start.
                            inst.stop()
                            inst = rig.start(system, False)
                        r = python_sender(rig, inst, inst.data_port, bulk_bytes, chunk, bulk_secs)
                        rid = f"bulk/{key}/cpu"
                        if "error" in r:
                            res.add(rid, system, note="failed: " + r["error"][:80])
                            log(f"  {label}: {r['error']}")
                            continue
                        res.add(rid, system, r["mb_per_server_cpu_sec"])
                        log(f"  {label}: {r['wall_mb_per_sec']:.0f} MB/s wall, "
                            f"{r['mb_per_server_cpu_sec']:.0f} MB/CPU-s, client CPU {r['client_cpu_secs']:.2f}s")
                finally:
                    inst.stop()
            for system in [x for x in TUNNEL_SYSTEMS if x in systems]:
                log(f"run {run_ + 1}/{runs}: {system} (tunnel, mutual TLS)")
                rig.current = f"{system}/tunnel/run{run_ + 1}"
                try:
                    t = start_tunnel(rig, system, echo_port)
                except Exception as e:
                    log(f"  cannot start {system} as a tunnel: {e}")
                    continue
                try:
                    tunnel_cases(rig, res, system, t, echo_port, s, bulk_bytes, bulk_secs, log)
                finally:
                    t.stop()
    finally:
        _driver().stop(echo_proc)


def tunnel_cases(rig, res, system, t, echo_port, s, bulk_bytes, bulk_secs, log):
    def failed(rids, what, r):
        for rid in rids:
            res.add(rid, system, note="failed: " + r["error"][:80])
        log(f"  {what}: {r['error']}")

    sink, echo = t.insts["sink"], t.insts["echo"]
    r = rig.loadgen("bulk", sink, t.ports["sink"], True, ["--bytes", bulk_bytes], bulk_secs)
    if "error" in r:
        failed(["tunnel/bulk/wall", "tunnel/bulk/cpu"], "bulk", r)
    else:
        res.add("tunnel/bulk/wall", system, r["wall_mb_per_sec"])
        res.add("tunnel/bulk/cpu", system, r["mb_per_server_cpu_sec"])
        log(f"  bulk: {r['wall_mb_per_sec']:.0f} MB/s wall, {r['mb_per_server_cpu_sec']:.0f} MB/CPU-s")

    count = s["conns"]
    r = rig.loadgen("handshake", echo, t.ports["echo"], True,
                    ["--count", count, "--concurrency", s["conn_concurrency"], "--echo-byte", "--warmup", 2], 120)
    if "error" in r:
        failed(["tunnel/conns/cpu"], "connections", r)
    else:
        note = None
        if r["failed"] or r["ok"] < count:
            note = f"{r['failed']} failed, {r['ok']}/{count} done: {list(r['errors'])[:1]}"
        us = r["server_cpu_us_per_handshake"]
        res.add("tunnel/conns/cpu", system, 1e6 / us if us else None, note)
        log(f"  connections: {us:.0f} us server CPU each, {r['rate_per_sec']:.0f}/s wall"
            f"{', ' + note if note else ''}")

    args = ["--count", s["round_trips"], "--warmup", 200]
    direct = rig.loadgen("latency", echo, echo_port, False, args + ["--plain"], 60)
    r = rig.loadgen("latency", echo, t.ports["echo"], True, args, 60)
    if "error" in r or "error" in direct:
        failed(["tunnel/lat/p50", "tunnel/lat/p99"], "latency", r if "error" in r else direct)
    else:
        for p in ("p50", "p99"):
            res.add(f"tunnel/lat/{p}", system, max(0.0, r[f"{p}_us"] - direct[f"{p}_us"]))
            res.rows[f"tunnel/lat/{p}"].setdefault("direct_us", []).append(round(direct[f"{p}_us"], 1))
        log(f"  latency: p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us through the tunnel; "
            f"direct p50 {direct['p50_us']:.0f} us, p99 {direct['p99_us']:.0f} us")

    r = rig.loadgen("idle", echo, t.ports["echo"], True, ["--count", s["idle"], "--concurrency", 64], 120)
    if "error" in r:
        failed(["tunnel/idle/kib"], "idle", r)
    else:
        note = f"only {r['held']:,} of {s['idle']:,} held" if r["held"] < s["idle"] else None
        res.add("tunnel/idle/kib", system, r["rss_kib_per_conn"], note)
        log(f"  idle: {r['rss_kib_per_conn']:.1f} KiB/conn, {r['held']} held")


def targets(res, systems):
    """Issue 9's targets, in the driver's format."""

    def med(rid, system="tlsnet"):
        return res.rows.get(rid, {}).get("cells", {}).get(system, {}).get("median")

    out = []

    def target(name, value, limit, cmp, unit, met, note=""):
        out.append({"target": name, "value": value, "limit": limit, "cmp": cmp, "unit": unit,
                    "met": None if value is None else met, "note": note})

    def vs(rid, peer):
        t, p = med(rid), med(rid, peer)
        return (t / p) if t and p else None

    r = vs("tunnel/bulk/cpu", "nginx")
    target("tunnel bulk, MB per server CPU-s vs nginx stream's", r, TARGET_BULK_CPU_VS_NGINX, ">=", "x",
           r is not None and r >= TARGET_BULK_CPU_VS_NGINX)
    r = vs("tunnel/bulk/wall", "stunnel")
    target("tunnel bulk, wall MB/s vs stunnel's", r, TARGET_BULK_WALL_VS_STUNNEL, ">=", "x",
           r is not None and r >= TARGET_BULK_WALL_VS_STUNNEL)
    ratios = {label: vs(rid, "openssl") for rid, label in
              [("bulk/cpu", "load generator")] + [(f"bulk/{k}/cpu", lbl) for k, lbl, _ in SENDERS]}
    known = {k: v for k, v in ratios.items() if v is not None}
    worst = min(known.values()) if known else None
    target("discard bulk ahead of openssl s_server with every sender (MB per server CPU-s)", worst, 1.0, ">",
           "x (worst sender)", worst is not None and worst > 1.0,
           "; ".join(f"{k} {v:.2f}x" for k, v in known.items()))
    r = vs("tunnel/conns/cpu", "nginx")
    target("new tunnelled connections per server CPU-s vs nginx stream's", r, TARGET_CONNS_VS_NGINX, ">=", "x",
           r is not None and r >= TARGET_CONNS_VS_NGINX)
    t = med("tunnel/lat/p99")
    peers = [v for v in (med("tunnel/lat/p99", p) for p in ("nginx", "stunnel")) if v is not None]
    direct = res.rows.get("tunnel/lat/p99", {}).get("direct_us")
    target("tunnel round trip, p99 added, below both peers'", t, min(peers) if peers else None, "<", "us",
           t is not None and bool(peers) and t < min(peers),
           f"direct connection p99 {min(direct):.0f}-{max(direct):.0f} us" if direct else "")
    t, n = med("tunnel/idle/kib"), med("tunnel/idle/kib", "nginx")
    r = (t / n) if t and n else None
    target("RSS per idle tunnelled mutual-TLS connection vs nginx stream's", r, TARGET_IDLE_VS_NGINX, "<=", "x",
           r is not None and r <= TARGET_IDLE_VS_NGINX)
    return out
