"""The rig's messaging section (issue 10): tlsnet's msg service against mosquitto 2.0 (MQTT
QoS 1) and nats-server (JetStream with `sync_interval: always` for the durable rows, core NATS
for the online rows), with the same load from bench/loadgen (`msg-tlsnet`, `msg-mqtt`,
`msg-nats`): N mutual-TLS clients, each its own user with its own certificate (CN uI).

Every peer is started on loopback by this module, in the rig's work dir, and stopped when its
cases are done. driver.py calls `add_rows(rig, res, quick, driver)` and `targets(res, quick)`.
"""

import shutil
import subprocess
import time
from pathlib import Path

SYSTEMS = ["tlsnet", "mosquitto", "jetstream", "nats"]
LABELS = {
    "mosquitto": "mosquitto QoS 1",
    "jetstream": "NATS JetStream",
    "nats": "core NATS",
}

TARGET_RATE = 100_000  # durably acked 100-byte messages per second, from 1,000 clients
TARGET_ACK_P99_MS = 10.0
TARGET_FANOUT = 300_000  # deliveries per second in a 100-member room
TARGET_IDLE_KIB = 16.0


def settings(quick):
    if quick:
        return {"clients": 50, "messages": 5000, "window": 4, "room": 20, "fanout_messages": 300,
                "senders": 2, "idle": 50, "secs": 60, "rate": 500, "paced_messages": 1000}
    # JetStream with sync_interval: always acks about a thousand a second here: fewer
    # messages for it, so that its rows take as long as the others'.
    # The offered-rate case: a load every durable system here carries (JetStream acks 1,100 to
    # 2,700 a second at saturation on this machine, by how loaded it is), 10 s of it.
    return {"clients": 1000, "messages": 100_000, "messages_jetstream": 20_000, "window": 4, "room": 100,
            "fanout_messages": 2000, "senders": 4, "idle": 1000, "secs": 180, "rate": 1000,
            "paced_messages": 10_000}


def nats_binary():
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run([str(root / "scripts" / "nats-server")], capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    return path[0] if path else None


class Peer:
    def __init__(self, proc, port):
        self.proc = proc
        self.hs_port = port
        self.data_port = port


def start(rig, d, system, users, bins):
    """Starts one server for `system`; returns an Instance-like object."""
    cert, key, ca = rig.cert()
    port = rig.ports.take()
    work = rig.work / f"msg-{system}"
    # A fresh store per server: the last case's messages are not the next one's.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    logp = rig.work / f"msg-{system}.log"
    if system == "tlsnet":
        store = work / "store"
        cmd = [str(rig.bin / "tlsnet"), "serve", "--listen", f"127.0.0.1:{port}", "--cert", cert, "--key", key,
               "--client-ca", ca, "--client-auth", "required", "--store", str(store), "--sync", "always",
               "--rate-limit", "0", "--max-queue", "1000000", "--idle-timeout", "0",
               "--max-connections", "100000", "--shutdown-timeout", "2s"]
    elif system == "mosquitto":
        conf = work / "mosquitto.conf"
        conf.write_text(f"""# tlsnet rig: MQTT over mutual TLS, QoS 1, persistence on
user root
listener {port} 127.0.0.1
cafile {ca}
certfile {cert}
keyfile {key}
tls_version tlsv1.3
require_certificate true
use_identity_as_username true
allow_anonymous false
persistence true
persistence_location {work}/
max_queued_messages 100000
max_inflight_messages 0
log_dest file {work}/mosquitto.log
log_type error
log_type warning
""")
        cmd = [bins["mosquitto"], "-c", str(conf)]
    elif system in ("nats", "jetstream"):
        if not bins.get("nats"):
            raise RuntimeError("no nats-server (scripts/nats-server failed)")
        conf = work / "nats.conf"
        names = ",\n    ".join(f'{{user: "CN=u{i}"}}' for i in range(users))
        js = (f"jetstream {{\n  store_dir: \"{work}/js\"\n  sync_interval: always\n}}\n"
              if system == "jetstream" else "")
        conf.write_text(f"""# tlsnet rig: NATS over mutual TLS, the certificate mapped to the user
listen: 127.0.0.1:{port}
max_connections: 100000
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify_and_map: true
  timeout: 5
}}
authorization {{
  users = [
    {names}
  ]
}}
{js}""")
        cmd = [bins["nats"], "-c", str(conf)]
    else:
        raise ValueError(system)
    proc = d.spawn(cmd, logp, rig.max_server_secs)
    d.wait_port(port, proc)
    time.sleep(0.3)
    return Peer(proc, port)


ROWS = [
    # (id, label, metric, unit, better)
    ("msg/direct/rate", "direct msgs, {c:,} clients, 100 B", "acked msgs/s", "msgs/s", "higher"),
    ("msg/direct/ack-p50", "direct msgs, {c:,} clients, 100 B", "send-to-ack p50", "ms", "lower"),
    ("msg/direct/ack-p99", "direct msgs, {c:,} clients, 100 B", "send-to-ack p99", "ms", "lower"),
    ("msg/direct/recv-p50", "direct msgs, {c:,} clients, 100 B", "send-to-receive p50", "ms", "lower"),
    ("msg/direct/recv-p99", "direct msgs, {c:,} clients, 100 B", "send-to-receive p99", "ms", "lower"),
    ("msg/direct/cpu", "direct msgs, {c:,} clients, 100 B", "server CPU", "us/msg", "lower"),
    ("msg/paced/ack-p50", "direct msgs, {c:,} clients, {rate:,} msgs/s offered", "send-to-ack p50", "ms", "lower"),
    ("msg/paced/ack-p99", "direct msgs, {c:,} clients, {rate:,} msgs/s offered", "send-to-ack p99", "ms", "lower"),
    ("msg/paced/recv-p50", "direct msgs, {c:,} clients, {rate:,} msgs/s offered", "send-to-receive p50", "ms",
     "lower"),
    ("msg/paced/recv-p99", "direct msgs, {c:,} clients, {rate:,} msgs/s offered", "send-to-receive p99", "ms",
     "lower"),
    ("msg/paced/cpu", "direct msgs, {c:,} clients, {rate:,} msgs/s offered", "server CPU", "us/msg", "lower"),
    ("msg/fanout/rate", "room of {r} members, fan-out", "deliveries/s", "deliveries/s", "higher"),
    ("msg/fanout/cpu", "room of {r} members, fan-out", "server CPU", "us/delivery", "lower"),
    ("msg/idle/kib", "{i:,} connected idle users", "RSS per user", "KiB", "lower"),
]


def errors_note(r):
    """The note for a load-generator result that had errors: how many, and the first kind."""
    if not r["errors"]:
        return None
    return f"{sum(r['errors'].values())} errors: {list(r['errors'])[0][:80]}"


def add_rows(rig, res, quick, d, systems):
    """Runs the messaging cases for `systems` (of SYSTEMS) and adds their rows to `res`."""
    s = settings(quick)
    systems = [x for x in SYSTEMS if x in systems]
    for rid, label, metric, unit, better in ROWS:
        res.row(rid, "msg", label.format(c=s["clients"], r=s["room"], i=s["idle"], rate=s["rate"]), metric, unit,
                better)
    if not systems:
        return
    users = max(s["clients"], s["room"], s["idle"])
    d.log(f"msg: {users} user certificates")
    r = subprocess.run([str(rig.bin / "tlsnet-loadgen"), "pki", "--dir", str(rig.pki), "--users", str(users)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        d.log(f"msg: cannot make user certificates: {r.stderr.strip()[-300:]}")
        return
    udir = str(rig.pki / "users")
    bins = {"mosquitto": shutil.which("mosquitto") or "/usr/sbin/mosquitto"}
    if "nats" in systems or "jetstream" in systems:
        bins["nats"] = nats_binary()
    if "mosquitto" in systems:
        res.add("msg/direct/rate", "mosquitto", note="its PUBACK is not durable: sent before the disk write")
        res.add("msg/paced/ack-p50", "mosquitto", note="its PUBACK is not durable: sent before the disk write")
    if "nats" in systems:
        for rid in ("msg/direct/rate", "msg/direct/ack-p50", "msg/direct/ack-p99", "msg/paced/ack-p50",
                    "msg/paced/ack-p99"):
            res.add(rid, "nats", note="n/a: no ack")
    if "jetstream" in systems:
        res.add("msg/direct/recv-p50", "jetstream", note="received on core subscriptions")
        res.add("msg/idle/kib", "jetstream", note="same as core NATS")

    def load(system, inst, case, args, secs):
        mode = {"tlsnet": "msg-tlsnet", "mosquitto": "msg-mqtt"}.get(system, "msg-nats")
        extra = ["--users", udir, "--case", case] + args
        if system == "jetstream":
            extra.append("--jetstream")
        rig.current = f"msg/{system}/{case}"
        return rig.loadgen(mode, inst, inst.hs_port, False, extra, secs)

    for system in systems:
        d.LOADS.append({"system": system, "msg": True, "loadavg": open("/proc/loadavg").read().split()[:3]})
        d.log(f"msg: {system}")
        for case in ("direct", "paced", "fanout", "idle"):
            if case == "idle" and system == "jetstream":
                continue
            # A fresh server (and store) per case, so that one case's backlog is not the next's.
            try:
                inst = start(rig, d, system, users, bins)
            except Exception as e:  # a peer that cannot start leaves its cells empty
                d.log(f"  cannot start {system}: {e}")
                break
            try:
                if case == "direct":
                    count = s.get("messages_" + system, s["messages"])
                    r = load(system, inst, "direct", ["--clients", s["clients"], "--messages", count,
                                                     "--window", s["window"]], s["secs"])
                    if "error" in r:
                        d.log(f"  direct: {r['error']}")
                        res.add("msg/direct/rate", system, note="failed: " + r["error"][:80])
                        continue
                    note = errors_note(r)
                    if system != "nats":
                        res.add("msg/direct/rate", system, r["acked_per_sec"], note)
                        if r["ack"]:
                            res.add("msg/direct/ack-p50", system, r["ack"]["p50_ms"])
                            res.add("msg/direct/ack-p99", system, r["ack"]["p99_ms"])
                    if r["receive"]:
                        res.add("msg/direct/recv-p50", system, r["receive"]["p50_ms"], note)
                        res.add("msg/direct/recv-p99", system, r["receive"]["p99_ms"])
                    res.add("msg/direct/cpu", system, r["server_cpu_us_per_message"])
                    d.log(f"  direct: {r['acked_per_sec']:.0f} acked/s, {r['messages_per_sec']:.0f} msgs/s, "
                          f"ack {r['ack']}, receive {r['receive']}, {r['server_cpu_us_per_message']:.1f} us/msg "
                          f"server CPU, client CPU {r['client_cpu_secs']:.1f}s{', ' + note if note else ''}")
                elif case == "paced":
                    # The open loop: a fixed offered rate, latency below saturation.
                    r = load(system, inst, "direct", ["--clients", s["clients"], "--messages", s["paced_messages"],
                                                     "--rate", s["rate"]], s["secs"])
                    if "error" in r:
                        d.log(f"  paced: {r['error']}")
                        res.add("msg/paced/recv-p50", system, note="failed: " + r["error"][:80])
                        continue
                    note = errors_note(r)
                    if system != "nats" and r["ack"]:
                        res.add("msg/paced/ack-p50", system, r["ack"]["p50_ms"], note)
                        res.add("msg/paced/ack-p99", system, r["ack"]["p99_ms"])
                    if r["receive"]:
                        res.add("msg/paced/recv-p50", system, r["receive"]["p50_ms"], note)
                        res.add("msg/paced/recv-p99", system, r["receive"]["p99_ms"])
                    res.add("msg/paced/cpu", system, r["server_cpu_us_per_message"])
                    d.log(f"  paced at {s['rate']} msgs/s: {r['messages_per_sec']:.0f} msgs/s, ack {r['ack']}, "
                          f"receive {r['receive']}, {r['server_cpu_us_per_message']:.1f} us/msg server CPU"
                          f"{', ' + note if note else ''}")
                elif case == "fanout":
                    r = load(system, inst, "fanout", ["--clients", s["room"], "--messages", s["fanout_messages"],
                                                     "--senders", s["senders"], "--window", s["window"]],
                             s["secs"])
                    if "error" in r:
                        d.log(f"  fanout: {r['error']}")
                        res.add("msg/fanout/rate", system, note="failed: " + r["error"][:80])
                        continue
                    note = errors_note(r)
                    res.add("msg/fanout/rate", system, r["deliveries_per_sec"], note)
                    res.add("msg/fanout/cpu", system, r["server_cpu_us_per_delivery"])
                    d.log(f"  fanout: {r['deliveries_per_sec']:.0f} deliveries/s, "
                          f"{r['server_cpu_us_per_delivery']:.2f} us/delivery, receive {r['receive']}"
                          f"{', ' + note if note else ''}")
                else:
                    r = load(system, inst, "idle", ["--clients", s["idle"]], s["secs"])
                    if "error" in r:
                        d.log(f"  idle: {r['error']}")
                        res.add("msg/idle/kib", system, note="failed: " + r["error"][:80])
                        continue
                    res.add("msg/idle/kib", system, r["rss_kib_per_user"])
                    d.log(f"  idle: {r['rss_kib_per_user']:.1f} KiB/user, {r['held']} held")
            finally:
                d.stop(inst.proc)
                time.sleep(0.3)


def targets(res, quick):
    """The targets of issue 10, as driver.py's judge() lists them."""
    def med(rid, system="tlsnet"):
        return res.rows.get(rid, {}).get("cells", {}).get(system, {}).get("median")

    out = []

    def target(name, value, limit, cmp, unit, note=""):
        met = None if value is None else (value <= limit if cmp == "<=" else value >= limit)
        if quick and "quick" in note:
            met = None
        out.append({"target": name, "value": value, "limit": limit, "cmp": cmp, "unit": unit, "met": met,
                    "note": note})

    q = "quick run: 50 clients, not 1,000" if quick else ""
    target("msg: durably acked 100-byte msgs/s from 1,000 clients", med("msg/direct/rate"), TARGET_RATE, ">=",
           "msgs/s", q)
    target("msg: send-to-ack p99", med("msg/direct/ack-p99"), TARGET_ACK_P99_MS, "<=", "ms", q)
    target("msg: fan-out in a 100-member room", med("msg/fanout/rate"), TARGET_FANOUT, ">=", "deliveries/s",
           "quick run: 20 members" if quick else "")
    target("msg: RSS per connected idle user", med("msg/idle/kib"), TARGET_IDLE_KIB, "<=", "KiB")
    behind = []
    compared = 0
    for rid, peers in (("msg/direct/rate", ("mosquitto", "jetstream")),
                       ("msg/direct/ack-p99", ("mosquitto", "jetstream")),
                       ("msg/fanout/rate", ("mosquitto", "jetstream", "nats"))):
        row = res.rows.get(rid)
        t = med(rid)
        if not row or t is None:
            continue
        for p in peers:
            v = med(rid, p)
            if v is None:
                continue
            compared += 1
            ahead = t > v if row["better"] == "higher" else t < v
            if not ahead:
                behind.append(f"{row['metric']} vs {LABELS[p]}: {fmt(t)} vs {fmt(v)}")
    out.append({"target": "msg: ahead of mosquitto and JetStream on throughput, p99 and fan-out",
                "value": compared - len(behind), "limit": compared, "cmp": ">=", "unit": "comparisons",
                "met": (not behind) if compared else None, "note": "; ".join(behind)})
    return out


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"

