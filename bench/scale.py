"""The rig's scaling section (issue 12): cross-node direct messages, the same load from
bench/loadgen (`msg-tlsnet`, case `direct`) against
(a) one tlsnet node on its embedded store (`--sync always`), and
(b) two tlsnet nodes on a cluster of three nats-servers (JetStream, routed, mutual TLS to the
    nodes; the nodes make an R3 stream), where client i connects to node A when i is even and
    to node B when odd (`--also-connect`): client i sends to client i+1, so every message
    crosses from one node to the other, half of them each way.

Server CPU is utime+stime of every server process of the case (the tlsnet nodes and the
nats-servers), summed, divided by the acked messages. Everything is started on loopback by
this module, in the rig's work dir, on ports from rig.ports, and stopped when its case is
done. driver.py calls `add_rows(rig, res, quick, driver)` and `targets(res, quick)`.
"""

import json
import subprocess
import time
import urllib.request

import msg as msg_bench

SETUPS = [
    # (id, label)
    ("embedded", "1 node, embedded store"),
    ("nats", "2 nodes, 3 nats-servers (R3)"),
]
METRICS = [
    # (id, metric, unit, better)
    ("rate", "acked msgs/s", "msgs/s", "higher"),
    ("recv-p50", "send-to-receive p50", "ms", "lower"),
    ("recv-p99", "send-to-receive p99", "ms", "lower"),
    ("cpu", "server CPU (all nodes + NATS)", "us/msg", "lower"),
]


def settings(quick):
    if quick:
        return {"clients": 20, "messages": 1000, "window": 4, "secs": 60}
    return {"clients": 200, "messages": 20_000, "window": 4, "secs": 180}


def nats_cluster(rig, d, nats_bin):
    """Starts three routed nats-servers with JetStream and mutual TLS for clients; returns
    [(proc, client port)] once each is healthy and JetStream has a metadata leader."""
    cert, key, ca = rig.cert()
    ports = [(rig.ports.take(), rig.ports.take(), rig.ports.take()) for _ in range(3)]
    procs = []
    for i, (port, route, http) in enumerate(ports):
        work = rig.work / f"scale-nats-{i + 1}"
        work.mkdir(exist_ok=True)
        routes = ", ".join(f'"nats-route://127.0.0.1:{r}"' for j, (_, r, _) in enumerate(ports) if j != i)
        conf = work / "nats.conf"
        conf.write_text(f"""# tlsnet rig: one of three routed nats-servers, JetStream, clients on mutual TLS
server_name: n{i + 1}
listen: "127.0.0.1:{port}"
http: "127.0.0.1:{http}"
max_connections: 100000
jetstream {{
  store_dir: "{work}/js"
  max_memory_store: 64MB
  max_file_store: 4GB
}}
cluster {{
  name: tlsnet-rig
  listen: "127.0.0.1:{route}"
  routes: [{routes}]
}}
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
  timeout: 5
}}
""")
        procs.append(d.spawn([nats_bin, "-c", str(conf)], rig.work / f"scale-nats-{i + 1}.log",
                             rig.max_server_secs))
    try:
        deadline = time.time() + 30
        for proc, (port, _, http) in zip(procs, ports):
            d.wait_port(port, proc)
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"nats-server on {port} exited with {proc.returncode}")
                if "ok" in monitor(http, "/healthz") and '"leader"' in monitor(http, "/jsz"):
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"the NATS cluster has no JetStream leader after 30 s (port {port})")
                time.sleep(0.1)
    except Exception:
        for p in procs:
            d.stop(p)
        raise
    return [(p, port) for p, (port, _, _) in zip(procs, ports)]


def monitor(http, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=2) as r:
            return r.read().decode("utf-8", "replace")
    except OSError:
        return ""


def node(rig, d, name, store_args):
    cert, key, ca = rig.cert()
    port = rig.ports.take()
    cmd = [str(rig.bin / "tlsnet"), "serve", "--listen", f"127.0.0.1:{port}", "--cert", cert, "--key", key,
           "--client-ca", ca, "--client-auth", "required", "--rate-limit", "0", "--idle-timeout", "0",
           "--max-connections", "100000", "--shutdown-timeout", "2s"] + store_args
    proc = d.spawn(cmd, rig.work / f"scale-{name}.log", rig.max_server_secs)
    d.wait_port(port, proc, 30)
    return proc, port


def loadgen(rig, d, ports, pids, udir, s):
    _, _, ca = rig.cert()
    cmd = [str(rig.bin / "tlsnet-loadgen"), "msg-tlsnet", "--connect", f"127.0.0.1:{ports[0]}",
           "--ca", ca, "--users", udir, "--case", "direct", "--clients", str(s["clients"]),
           "--messages", str(s["messages"]), "--window", str(s["window"]), "--max-secs", str(s["secs"])]
    for p in ports[1:]:
        cmd += ["--also-connect", f"127.0.0.1:{p}"]
    for pid in pids:
        cmd += ["--pid", str(pid)]
    busy0, kids0 = d.cpu_busy(), d.children_cpu()
    server0 = sum(d.tree_cpu(p) for p in pids)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=s["secs"] + 60)
    except subprocess.TimeoutExpired:
        return {"error": "load generator timed out"}
    busy = d.cpu_busy() - busy0
    ours = sum(d.tree_cpu(p) for p in pids) - server0 + d.children_cpu() - kids0
    rig.busy.append((busy, max(0.0, busy - ours)))
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        err = [ln for ln in lines if ln.startswith("Error:")] or lines[-1:] or [f"exit {r.returncode}"]
        return {"error": err[0].removeprefix("Error: ")}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    rig.samples.append({"system": rig.current, "ports": ports, "args": cmd[2:], **out})
    return out


def add_rows(rig, res, quick, d):
    s = settings(quick)
    label = f"cross-node direct msgs, {s['clients']:,} clients, 100 B: "
    for sid, slabel in SETUPS:
        for mid, metric, unit, better in METRICS:
            res.row(f"scale/{sid}/{mid}", "scale", label + slabel, metric, unit, better)
    d.log(f"scale: {s['clients']} user certificates")
    r = subprocess.run([str(rig.bin / "tlsnet-loadgen"), "pki", "--dir", str(rig.pki), "--users",
                        str(s["clients"])], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        d.log(f"scale: cannot make user certificates: {r.stderr.strip()[-300:]}")
        return
    udir = str(rig.pki / "users")
    cert, key, ca = rig.cert()
    for sid, slabel in SETUPS:
        d.LOADS.append({"system": f"scale-{sid}", "loadavg": open("/proc/loadavg").read().split()[:3]})
        d.log(f"scale: {slabel}")
        rig.current = f"scale/{sid}"
        procs = []
        try:
            if sid == "embedded":
                proc, port = node(rig, d, "embedded", ["--store", str(rig.work / "scale-store"), "--sync", "always",
                                                       "--max-queue", "1000000"])
                procs.append(proc)
                ports = [port]
            else:
                nats_bin = msg_bench.nats_binary()
                if not nats_bin:
                    raise RuntimeError("no nats-server (scripts/nats-server failed)")
                cluster = nats_cluster(rig, d, nats_bin)
                procs += [p for p, _ in cluster]
                url = "nats://" + ",".join(f"127.0.0.1:{p}" for _, p in cluster)
                store = ["--store", url, "--nats-ca", ca, "--nats-cert", str(rig.pki / "client.pem"),
                         "--nats-key", str(rig.pki / "client-key.pem"), "--nats-replicas", "3"]
                ports = []
                for name in ("node-a", "node-b"):
                    proc, port = node(rig, d, name, store)
                    procs.append(proc)
                    ports.append(port)
            time.sleep(0.3)
            r = loadgen(rig, d, ports, [p.pid for p in procs], udir, s)
        except Exception as e:  # a setup that cannot start leaves its cells empty
            d.log(f"  cannot start {slabel}: {e}")
            res.add(f"scale/{sid}/rate", "tlsnet", note=f"failed: {str(e)[:80]}")
            continue
        finally:
            for p in reversed(procs):
                d.stop(p)
            time.sleep(0.3)
        if "error" in r:
            d.log(f"  {r['error']}")
            res.add(f"scale/{sid}/rate", "tlsnet", note="failed: " + r["error"][:80])
            continue
        note = None
        if r["errors"]:
            note = f"{sum(r['errors'].values())} errors: {list(r['errors'])[0][:80]}"
        elif r["received"] < r["acked"]:
            note = f"only {r['received']:,} of {r['acked']:,} acked messages received"
        res.add(f"scale/{sid}/rate", "tlsnet", r["acked_per_sec"], note)
        if r["receive"]:
            res.add(f"scale/{sid}/recv-p50", "tlsnet", r["receive"]["p50_ms"])
            res.add(f"scale/{sid}/recv-p99", "tlsnet", r["receive"]["p99_ms"])
        res.add(f"scale/{sid}/cpu", "tlsnet", r["server_cpu_us_per_message"])
        res.rows[f"scale/{sid}/rate"]["cells"]["tlsnet"].setdefault("runs", []).append(
            {"acked": r["acked"], "received": r["received"], "asked": r["asked"]})
        d.log(f"  {r['acked_per_sec']:.0f} acked/s, {r['acked']} acked, {r['received']} received, "
              f"receive {r['receive']}, {r['server_cpu_us_per_message']:.0f} us/msg server CPU"
              f"{', ' + note if note else ''}")


def targets(res, quick):
    """Not a speed target (issue 12 sets none): every acked cross-node message is received."""
    out = []
    for sid, slabel in SETUPS:
        runs = res.rows.get(f"scale/{sid}/rate", {}).get("cells", {}).get("tlsnet", {}).get("runs", [])
        acked = sum(x["acked"] for x in runs)
        received = sum(x["received"] for x in runs)
        out.append({"target": f"scale: {slabel}: every acked message received", "value": received if runs else None,
                    "limit": acked, "cmp": ">=", "unit": "msgs",
                    "met": (received >= acked and acked > 0) if runs else None, "note": ""})
    return out
