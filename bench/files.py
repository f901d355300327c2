"""The rig's file-transfer rows (issue 11): `tlsnet files` against scp, sftp and rsync over an
OpenSSH `sshd`, and FTPS (`lftp` to `vsftpd`), with the same files, in one run.

Every server is started here, on 127.0.0.1, with its own configuration, keys and
certificates in the rig's work directory, as the current user (never the system's sshd or
vsftpd), bounded in time and stopped when the section is done. The big files live in the
work directory and are deleted as soon as their rows are measured.

Where the files are: by default a new directory on the RAM file system /dev/shm (tmpfs) when
it and the machine's available memory have room for the source, the server's copy and the
download (3x the big file, and 1 GiB to spare), else the rig's work directory on disk; the
same directory for every system. So the rows measure the tools, not the machine's disk:
fsync on tmpfs is nearly free, so durability costs nothing there. `bench/run --files-dir DIR`
puts them in DIR instead (a directory on disk, to measure durable writes). The fsync write
rate of the rig's disk is measured either way and printed with the table.

Rows (MB = 10^6 bytes):
- one big file (2 GiB; 64 MiB in quick mode) up and down: wall MB/s, and MB per server
  CPU-second (utime + stime of every process of the server's tree, sampled every 20 ms: for
  sshd, the listener, the session's sshd processes and sftp-server or rsync; for vsftpd its
  session processes);
- a tree of 10,000 files of 4 KiB (500 in quick mode) up: files per second;
- the big file's upload cut at half (SIGKILL of the client once the server holds half of it),
  then run again: the time to finish, and that time against the same system's full upload.

Called by bench/driver.py: `run(rig, quick, runs, tools)` returns a `Results` (tools is the
driver module: spawn, stop, Results ...), `render(res)` prints its table, `targets(res, quick)`
the Targets lines, `missing(res)` the tlsnet cells that could not be measured.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SYSTEMS = ["tlsnet", "scp", "sftp", "rsync", "ftps"]
LABELS = {
    "tlsnet": "tlsnet files",
    "scp": "scp",
    "sftp": "sftp",
    "rsync": "rsync/ssh",
    "ftps": "lftp/vsftpd",
}
# OpenSSH's fastest cipher here (AES-NI), the same AES-256-GCM as tlsnet's TLS suite; the
# default, chacha20-poly1305, is slower on this kind of machine.
SSH_CIPHER = "aes256-gcm@openssh.com"

TARGET_BIG_VS_DISCARD = 0.80
TARGET_TREE_VS_SCP = 5.0
TARGET_RESUME_SHARE = 0.60

CLK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, flush=True, file=__import__("sys").stderr)


def _cpu_of(pid):
    """utime + stime of one process (all its threads), in seconds; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK
    except (OSError, IndexError, ValueError):
        return None


def _children(pid):
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except (OSError, ValueError):
        pass
    return kids


def tree_snapshot(root):
    """{pid: CPU seconds} of a process and its descendants."""
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        cpu = _cpu_of(pid)
        if cpu is None:
            continue
        out[pid] = cpu
        todo.extend(_children(pid))
    return out


class TreeCpu:
    """CPU seconds a process tree spends while it is watched: every process seen in the tree
    (sampled every 20 ms, from /proc/PID/task/*/children) counts with the last CPU time read
    from it. Sessions that fork per connection (sshd, vsftpd) and whose processes end without
    being waited for by the tree (so that no cutime catches them) are counted so too; what a
    process spends in its last 20 ms before it ends is missed."""

    def __init__(self, root):
        import threading
        self.root = root
        self.start = tree_snapshot(root)
        self.seen = dict(self.start)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.done.wait(0.02):
            self._sample()

    def _sample(self):
        for pid, cpu in tree_snapshot(self.root).items():
            self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))

    def stop(self):
        self.done.set()
        self.thread.join()
        self._sample()
        return sum(self.seen.values()) - sum(self.start.values())


def make_file(path, size):
    """`size` random bytes (incompressible), written in 4 MiB blocks."""
    block = 4 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(block, left)
            f.write(os.urandom(n))
            left -= n


def make_tree(root, count, size=4096, per_dir=100):
    for i in range(count):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i % per_dir:03d}.bin").write_bytes(os.urandom(size))


def disk_rate(d, size=256 << 20):
    """MB/s of a write of `size` bytes to `d`, fsync included: the ceiling of any durable
    upload (tlsnet syncs every file before it gets its name; the peers do not)."""
    path = d / "disk-probe.bin"
    block = os.urandom(4 << 20)
    os.sync()
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    secs = time.perf_counter() - t0
    path.unlink()
    return size / 1e6 / secs


def fs_type(path):
    """The file system type of the mount that holds `path` (the longest mount point that is a
    prefix of it, from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def files_dir(rig, big_size):
    """The file rows' work directory (see the module's docstring); a new one, removed at the end."""
    import tempfile
    asked = getattr(rig.a, "files_dir", None)
    if asked:
        Path(asked).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="tlsnet-bench-files.", dir=asked))
    need = 3 * big_size + (1 << 30)
    shm = Path("/dev/shm")
    if shm.is_dir() and fs_type(shm) == "tmpfs":
        st = os.statvfs(shm)
        free = st.f_bavail * st.f_frsize
        if free >= need and mem_available() >= need:
            return Path(tempfile.mkdtemp(prefix="tlsnet-bench-files.", dir=shm))
        log(f"files: /dev/shm has {free >> 20} MiB free and the machine {mem_available() >> 20} MiB "
            f"available, {need >> 20} MiB needed: the file rows run on disk ({rig.work})")
    return rig.work / "files"


def count_files(root):
    return sum(len(files) for _, _, files in os.walk(root))


def same_file(a, b, size):
    """Same size, and the same bytes at the start, the middle and the end (1 MiB each)."""
    try:
        if os.path.getsize(b) != size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            for off in (0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))):
                fa.seek(off)
                fb.seek(off)
                if fa.read(1 << 20) != fb.read(1 << 20):
                    return False
        return True
    except OSError:
        return False


def rm(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class Failed(Exception):
    pass


class Section:
    def __init__(self, rig, quick, tools):
        self.rig, self.quick, self.t = rig, quick, tools
        self.big_size = (64 << 20) if quick else (2 << 30)
        self.dir = files_dir(rig, self.big_size)
        self.on_tmpfs = fs_type(self.dir) == "tmpfs"
        self.src = self.dir / "src"
        self.tree_count = 500 if quick else 10000
        self.limit = 120 if quick else 900
        self.servers = {}  # name -> process
        self.cert, self.key, self.ca = rig.cert()
        self.big = self.src / "big.bin"
        self.tree = self.src / "tree"

    # ---- servers -------------------------------------------------------------------------

    def start_tlsnet(self):
        port = self.rig.ports.take()
        root = self.dir / "tlsnet-root"
        root.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.rig.bin / "tlsnet"), "serve", "--listen", f"127.0.0.1:{port}",
               "--cert", self.cert, "--key", self.key, "--client-ca", self.ca,
               "--client-auth", "required", "--files-root", str(root),
               "--quota", "0", "--max-file-size", str(self.big_size + (1 << 20)),
               "--idle-timeout", "0"]
        proc = self.t.spawn(cmd, self.dir / "tlsnet-serve.log", self.rig.max_server_secs)
        self.t.wait_port(port, proc)
        self.servers["tlsnet"] = proc
        self.tlsnet_addr = f"127.0.0.1:{port}"
        self.tlsnet_files = root / "users" / "tlsnet-dev-client" / "files"
        self.tlsnet_partial = root / "users" / "tlsnet-dev-client" / ".partial"

    def start_sshd(self):
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        d = self.dir / "ssh"
        d.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "id_client"):
            if not (d / name).exists():
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                               check=True, capture_output=True, timeout=30)
        shutil.copy(d / "id_client.pub", d / "authorized_keys")
        port = self.rig.ports.take()
        sftp_server = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server",
                                        "/usr/libexec/openssh/sftp-server") if os.path.exists(p)),
                           "internal-sftp")
        (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Compression no
Ciphers {SSH_CIPHER}
Subsystem sftp {sftp_server}
LogLevel ERROR
""")
        (d / "ssh_config").write_text(f"""Host bench
    HostName 127.0.0.1
    Port {port}
    User {os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name}
    IdentityFile {d}/id_client
    IdentitiesOnly yes
    UserKnownHostsFile {d}/known_hosts
    StrictHostKeyChecking no
    BatchMode yes
    Compression no
    Ciphers {SSH_CIPHER}
    LogLevel ERROR
""")
        # sshd started by root wants its privilege-separation directory (the package's service
        # would make it); a non-root sshd does not.
        if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        proc = self.t.spawn([sshd, "-D", "-e", "-f", str(d / "sshd_config")], self.dir / "sshd.log",
                            self.rig.max_server_secs)
        self.t.wait_port(port, proc)
        self.servers["ssh"] = proc
        self.ssh_config = d / "ssh_config"
        self.ssh_root = self.dir / "ssh-root"
        self.ssh_root.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["ssh", "-F", str(self.ssh_config), "bench", "true"], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise Failed(f"ssh to the rig's sshd: {r.stderr.strip()[-200:]}")

    def start_vsftpd(self):
        vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        d = self.dir / "vsftpd"
        (d / "empty").mkdir(parents=True, exist_ok=True)
        self.ftp_root = self.dir / "ftp-root"
        self.ftp_root.mkdir(parents=True, exist_ok=True)
        port = self.rig.ports.take()
        pasv = self.rig.ports.take()
        pasv_max = pasv + 50
        self.rig.ports.next = pasv_max + 1
        # Anonymous logins only (no PAM, no system accounts), TLS on the control and data
        # connections with the rig's certificate. Started by root, a session is chrooted to
        # the FTP root and runs as the `ftp` user (made by the vsftpd package), which owns the
        # directories files go to; started by anyone else, it runs as that user
        # (run_as_launching_user: no chroot is possible then).
        if os.getuid() == 0:
            import pwd
            ftp = pwd.getpwnam("ftp")
            self.ftp_owner = (ftp.pw_uid, ftp.pw_gid)
            mode = "run_as_launching_user=NO\nftp_username=ftp\nnopriv_user=ftp\n"
        else:
            self.ftp_owner = None
            mode = "run_as_launching_user=YES\n"
        (d / "vsftpd.conf").write_text(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
{mode}anonymous_enable=YES
no_anon_password=YES
anon_root={self.ftp_root}
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
write_enable=YES
local_enable=NO
seccomp_sandbox=NO
secure_chroot_dir={d}/empty
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv}
pasv_max_port={pasv_max}
connect_from_port_20=NO
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
require_ssl_reuse=NO
ssl_ciphers=HIGH
rsa_cert_file={self.cert}
rsa_private_key_file={self.key}
xferlog_enable=NO
dual_log_enable=NO
vsftpd_log_file={d}/vsftpd.log
max_clients=64
idle_session_timeout=600
data_connection_timeout=600
""")
        proc = self.t.spawn([vsftpd, str(d / "vsftpd.conf")], self.dir / "vsftpd.log",
                            self.rig.max_server_secs)
        self.t.wait_port(port, proc)
        self.servers["ftp"] = proc
        self.ftp_port = port
        r = self.lftp("cls -1", 30)
        if r.returncode != 0:
            raise Failed(f"lftp to the rig's vsftpd: {(r.stderr or r.stdout).strip()[-300:]}")

    def stop_all(self):
        for proc in self.servers.values():
            self.t.stop(proc)
        self.servers.clear()

    # ---- clients -------------------------------------------------------------------------

    def tlsnet_cmd(self, sub, *args):
        pki = self.rig.pki
        return [str(self.rig.bin / "tlsnet"), "files", sub, self.tlsnet_addr, "--ca", self.ca,
                "--cert", str(pki / "client.pem"), "--key", str(pki / "client-key.pem"),
                "--servername", "localhost", "--quiet", *args]

    def ssh_opts(self):
        return ["-F", str(self.ssh_config)]

    def lftp_script(self, commands):
        return (f"set cmd:fail-exit yes; set dns:order inet; set ftp:ssl-force yes; "
                f"set ftp:ssl-protect-data yes; set ftp:ssl-protect-list yes; set ssl:ca-file {self.ca}; "
                f"set ssl:verify-certificate yes; set ftp:passive-mode yes; set net:max-retries 1; "
                f"set net:reconnect-interval-base 1; set xfer:clobber yes; "
                f"open -u anonymous, ftp://localhost:{self.ftp_port}; {commands}")

    def lftp(self, commands, limit):
        return subprocess.run(["lftp", "-c", self.lftp_script(commands)], capture_output=True,
                              text=True, timeout=limit)

    def server_of(self, system):
        return self.servers["tlsnet" if system == "tlsnet" else "ftp" if system == "ftps" else "ssh"]

    def remote_dir(self, system, sub):
        """The server-side directory a system's files go to (made empty)."""
        if system == "tlsnet":
            d = self.tlsnet_files / sub
        elif system == "ftps":
            d = self.ftp_root / system / sub
        else:
            d = self.ssh_root / system / sub
        rm(d)
        d.mkdir(parents=True, exist_ok=True)
        if system == "ftps" and self.ftp_owner:
            for p in (d.parent, d):
                os.chown(p, *self.ftp_owner)
        return d

    def upload_cmd(self, system, local, remote, tree=False, resume=False):
        """The command that sends `local` (a file, or with `tree` a directory) into the server
        directory `remote` (as made by `remote_dir`)."""
        if system == "tlsnet":
            rel = remote.relative_to(self.tlsnet_files)
            return self.tlsnet_cmd("put", str(local), "--dir", str(rel))
        if system == "scp":
            return ["scp", "-q", *self.ssh_opts(), *(["-r"] if tree else []), str(local), f"bench:{remote}/"]
        if system == "sftp":
            if tree:
                batch = f"put -r {local} {remote}/{local.name}"
            else:
                batch = f"{'reput' if resume else 'put'} {local} {remote}/{local.name}"
            return ["sh", "-c", f"echo '{batch}' | sftp -q {' '.join(self.ssh_opts())} -b - bench"]
        if system == "rsync":
            opts = ["-a", "--partial"] + (["--append-verify"] if resume else [])
            return ["rsync", *opts, "-e", f"ssh -F {self.ssh_config}", str(local), f"bench:{remote}/"]
        if system == "ftps":
            rel = remote.relative_to(self.ftp_root)
            if tree:
                return ["lftp", "-c", self.lftp_script(
                    f"mirror -R --parallel=4 --no-perms {local} {rel}/{local.name}")]
            return ["lftp", "-c", self.lftp_script(f"put {'-c ' if resume else ''}-O {rel} {local}")]
        raise ValueError(system)

    def download_cmd(self, system, remote_file, local_dir):
        if system == "tlsnet":
            rel = remote_file.relative_to(self.tlsnet_files)
            return self.tlsnet_cmd("get", str(rel), "-o", str(local_dir))
        if system == "scp":
            return ["scp", "-q", *self.ssh_opts(), f"bench:{remote_file}", f"{local_dir}/"]
        if system == "sftp":
            return ["sh", "-c", f"echo 'get {remote_file} {local_dir}/' | sftp -q "
                                f"{' '.join(self.ssh_opts())} -b - bench"]
        if system == "rsync":
            return ["rsync", "-a", "-e", f"ssh -F {self.ssh_config}", f"bench:{remote_file}", f"{local_dir}/"]
        if system == "ftps":
            rel = remote_file.relative_to(self.ftp_root)
            return ["lftp", "-c", self.lftp_script(f"get {rel} -o {local_dir}/{remote_file.name}")]
        raise ValueError(system)

    def warm(self):
        """On tmpfs, writes and deletes a file of the big file's size, so that every transfer
        writes into pages freed a moment before. New pages cost this VM several times more
        than reused ones (see BENCHMARKS.md, "Fresh memory"), and without this the first
        system in the fixed order (tlsnet) would pay for them and those after it would not."""
        if not self.on_tmpfs:
            return
        path = self.dir / "warm.tmp"
        block = bytes(1 << 20)
        with open(path, "wb") as f:
            for _ in range(self.big_size >> 20):
                f.write(block)
        os.unlink(path)

    def timed(self, system, cmd):
        """Runs a client command to its end: (wall seconds, server CPU seconds)."""
        server = self.server_of(system)
        self.warm()
        # What earlier cases left in the page cache is written out first, so that nobody's
        # fsync pays for another's writes.
        os.sync()
        watch = TreeCpu(server.pid)
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.limit,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            watch.stop()
            raise Failed(f"no end within {self.limit} s")
        wall = time.perf_counter() - t0
        cpu = watch.stop()
        if r.returncode != 0:
            raise Failed(f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-160:]}")
        return wall, cpu

    def cut_at_half(self, system, cmd, watch):
        """Starts an upload and SIGKILLs it (its process group) once the server holds half the
        file; then waits until the server side is quiet."""
        half = self.big_size // 2
        self.warm()
        os.sync()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + self.limit
        cut = None
        try:
            while time.time() < deadline:
                size = watch()
                if size >= half:
                    cut = size
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.01)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
        if cut is None:
            raise Failed("the upload ended (or stalled) before half of it was there")
        # The server's session notices the end and keeps what it has; wait until the partial
        # file stops growing.
        last, stable, deadline = -1, 0, time.time() + 30
        while time.time() < deadline and stable < 5:
            size = watch()
            stable = stable + 1 if size == last else 0
            last = size
            time.sleep(0.1)
        return cut

    def partial_size(self, system, remote):
        """The largest file the server holds of the big upload so far."""
        dirs = [self.tlsnet_partial] if system == "tlsnet" else [remote]
        best = 0
        for d in dirs:
            try:
                for e in os.scandir(d):
                    if e.is_file(follow_symlinks=False):
                        best = max(best, e.stat().st_size)
            except OSError:
                pass
        return best

    # ---- the cases -----------------------------------------------------------------------

    def case_big(self, system, res, full_up):
        mb = self.big_size / 1e6
        remote = self.remote_dir(system, "big")
        wall, cpu = self.timed(system, self.upload_cmd(system, self.big, remote))
        if not same_file(self.big, remote / self.big.name, self.big_size):
            raise Failed("the uploaded file differs from the source")
        res.add("files/big/up/wall", system, mb / wall)
        res.add("files/big/up/cpu", system, mb / cpu if cpu > 0 else None,
                None if cpu > 0 else "no server CPU measured")
        full_up[system] = wall
        log(f"  {system}: big up {mb / wall:.0f} MB/s, {cpu:.2f} server CPU-s")
        local = self.dir / "down" / system
        rm(local)
        local.mkdir(parents=True)
        wall, cpu = self.timed(system, self.download_cmd(system, remote / self.big.name, local))
        ok = same_file(self.big, local / self.big.name, self.big_size)
        rm(local)
        rm(remote)
        if not ok:
            raise Failed("the downloaded file differs from the source")
        res.add("files/big/down/wall", system, mb / wall)
        res.add("files/big/down/cpu", system, mb / cpu if cpu > 0 else None)
        log(f"  {system}: big down {mb / wall:.0f} MB/s, {cpu:.2f} server CPU-s")

    def case_tree(self, system, res, full_up):
        remote = self.remote_dir(system, "tree")
        wall, _ = self.timed(system, self.upload_cmd(system, self.tree, remote, tree=True))
        got = count_files(remote)
        rm(remote)
        if got != self.tree_count:
            raise Failed(f"{got} of {self.tree_count} files arrived")
        res.add("files/tree/up", system, self.tree_count / wall)
        log(f"  {system}: tree up {self.tree_count / wall:.0f} files/s")

    def case_resume(self, system, res, full_up):
        remote = self.remote_dir(system, "resume")
        watch = lambda: self.partial_size(system, remote)  # noqa: E731
        if system == "tlsnet":
            for p in self.tlsnet_partial.glob("*"):
                rm(p)
        cut = self.cut_at_half(system, self.upload_cmd(system, self.big, remote), watch)
        wall, _ = self.timed(system, self.upload_cmd(system, self.big, remote, resume=True))
        ok = same_file(self.big, remote / self.big.name, self.big_size)
        rm(remote)
        if not ok:
            raise Failed("the resumed file differs from the source")
        note = None
        if system == "scp":
            note = "no resume in scp: it sends the whole file again"
        res.add("files/resume/secs", system, wall, note)
        if full_up.get(system):
            res.add("files/resume/share", system, 100 * wall / full_up[system], note)
        log(f"  {system}: cut at {cut / self.big_size:.0%}, resumed in {wall:.2f} s "
            f"(full upload {full_up.get(system, 0):.2f} s)")


def rows(res, quick):
    size = "64 MiB" if quick else "2 GiB"
    count = "500" if quick else "10,000"
    res.row("files/big/up/wall", "files", f"one {size} file, up", "wall", "MB/s", "higher")
    res.row("files/big/up/cpu", "files", f"one {size} file, up", "per server CPU", "MB/CPU-s", "higher")
    res.row("files/big/down/wall", "files", f"one {size} file, down", "wall", "MB/s", "higher")
    res.row("files/big/down/cpu", "files", f"one {size} file, down", "per server CPU", "MB/CPU-s", "higher")
    res.row("files/tree/up", "files", f"tree of {count} files of 4 KiB, up", "wall", "files/s", "higher")
    res.row("files/resume/secs", "files", f"{size} upload cut at half, run again", "time to finish", "s",
            "lower")
    res.row("files/resume/share", "files", f"{size} upload cut at half, run again", "of a full upload", "%",
            "lower")


def run(rig, quick, runs, tools):
    """Measures every file row `runs` times (interleaved), and returns the Results."""
    res = tools.Results()
    rows(res, quick)
    s = Section(rig, quick, tools)
    s.dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        s.src.mkdir(parents=True, exist_ok=True)
        log(f"files: making a {s.big_size >> 20} MiB file and a tree of {s.tree_count} files")
        make_file(s.big, s.big_size)
        make_tree(s.tree, s.tree_count)
        res.files_dir = str(s.dir)
        res.files_fs = fs_type(s.dir)
        log(f"files: in {s.dir} ({res.files_fs})")
        # The fsync write rate of the rig's disk (its work directory), the ceiling of any
        # durable writer there; and of the files' directory when that is elsewhere (tmpfs).
        res.disk_mb_s = disk_rate(s.dir if res.files_fs != "tmpfs" else rig.work)
        res.disk_fs = fs_type(rig.work) if res.files_fs == "tmpfs" else res.files_fs
        log(f"files: the rig's disk ({res.disk_fs}) writes {res.disk_mb_s:.0f} MB/s with fsync")
        up = {}
        for name, start in (("tlsnet", s.start_tlsnet), ("ssh", s.start_sshd), ("ftp", s.start_vsftpd)):
            try:
                start()
            except Exception as e:  # a peer that cannot start leaves its cells empty
                log(f"  files: cannot start {name}: {e}")
                up[name] = str(e)[:100]
        for run_no in range(runs):
            for system in SYSTEMS:
                server = "tlsnet" if system == "tlsnet" else "ftp" if system == "ftps" else "ssh"
                if server in up:
                    for rid in res.order:
                        res.add(rid, system, note="cannot start: " + up[server])
                    continue
                log(f"files run {run_no + 1}/{runs}: {system}")
                full_up = {}
                for case, rids in ((s.case_big, ["files/big/up/wall", "files/big/up/cpu",
                                                 "files/big/down/wall", "files/big/down/cpu"]),
                                   (s.case_tree, ["files/tree/up"]),
                                   (s.case_resume, ["files/resume/secs", "files/resume/share"])):
                    try:
                        case(system, res, full_up)
                    except (Failed, OSError, subprocess.SubprocessError) as e:
                        log(f"  {system}: {case.__name__}: {e}")
                        for rid in rids:
                            res.add(rid, system, note=f"failed: {str(e)[:80]}")
    finally:
        s.stop_all()
        rm(s.src)
        for d in ("down", "ssh-root", "ftp-root", "tlsnet-root"):
            rm(s.dir / d)
        if s.dir != rig.work / "files":
            # Our own directory (on tmpfs, or in --files-dir): the logs go with it, except
            # that they are copied to the rig's work directory first.
            keep = rig.work / "files"
            keep.mkdir(parents=True, exist_ok=True)
            for p in s.dir.glob("*.log"):
                shutil.copy(p, keep / p.name)
            rm(s.dir)
    res.finish()
    log(f"files: {time.time() - started:.0f} s")
    return res


def ratio(res, rid, tools):
    row = res.rows[rid]
    return tools.ratio(row, SYSTEMS)


def render(res, tools):
    cols = SYSTEMS
    head = ["case", "metric"] + [LABELS[s] for s in cols] + ["tlsnet vs best"]
    lines = []
    for rid in res.order:
        r = res.rows[rid]
        cells = [tools.cell_text(r["cells"].get(s)) for s in cols]
        rt, bp = tools.ratio(r, cols)
        lines.append([r["case"], f"{r['metric']} ({r['unit']})"] + cells
                     + [f"{rt:.2f}x vs {LABELS[bp[0]]}" if rt else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    disk = getattr(res, "disk_mb_s", None)
    fs = getattr(res, "files_fs", "?")
    if fs == "tmpfs":
        where = ("Every system's files are on tmpfs (RAM): fsync on tmpfs is nearly free, so durability "
                 "costs nothing here" + (f"; on this VM's disk every durable writer is bound to ~{disk:.0f} "
                                         "MB/s (its fsync write rate, measured now)." if disk else "."))
    else:
        where = (f"Every system's files are on disk ({fs})"
                 + (f", which writes {disk:.0f} MB/s with fsync: the ceiling of every durable writer."
                    if disk else "."))
    out = ["", "File transfer (bench/files.py): the same files through each; server CPU = its whole "
           "process tree. tlsnet syncs every file before it appears (and the client every "
           "download); the peers do not. " + where,
           "  ".join(h.ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    for line in lines:
        out.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
    notes = []
    for rid in res.order:
        r = res.rows[rid]
        for s in cols:
            c = r["cells"].get(s)
            if c and "median" in c and c["notes"]:
                notes.append(f"  * {r['case']} / {LABELS[s]}: {'; '.join(c['notes'])}")
    out.extend(dict.fromkeys(notes))
    return "\n".join(out)


def targets(res, main_res, quick, tools):
    """The file targets of issue 11; `main_res` has the discard bulk row."""
    def med(rid, system="tlsnet", r=res):
        return r.rows.get(rid, {}).get("cells", {}).get(system, {}).get("median")

    out = []

    def target(name, value, limit, cmp, unit, note=""):
        met = None if value is None else (value <= limit if cmp == "<=" else value >= limit)
        out.append({"target": name, "value": value, "limit": limit, "cmp": cmp, "unit": unit,
                    "met": met, "note": note})

    bulk = med("bulk/wall", r=main_res)
    for way in ("up", "down"):
        big = med(f"files/big/{way}/wall")
        target(f"files: big file {way}, wall vs the same run's discard bulk rate",
               big / bulk if big and bulk else None, TARGET_BIG_VS_DISCARD, ">=", "x",
               f"{tools.fmt(big)} vs {tools.fmt(bulk)} MB/s" if big and bulk else
               ("" if bulk else "no discard bulk row in this run"))
    t, scp = med("files/tree/up"), med("files/tree/up", "scp")
    target("files: tree of small files vs scp's files/s", t / scp if t and scp else None,
           TARGET_TREE_VS_SCP, ">=", "x")
    target("files: resumed upload's time, of a full upload's", med("files/resume/share"),
           100 * TARGET_RESUME_SHARE, "<=", "%")
    behind = []
    counted = 0
    for rid in res.order:
        rt, bp = tools.ratio(res.rows[rid], SYSTEMS)
        if rt is None:
            continue
        counted += 1
        if rt < 1.0:
            behind.append(f"{res.rows[rid]['case']} {res.rows[rid]['metric']}: {rt:.2f}x vs {LABELS[bp[0]]}")
    out.append({"target": "files: ahead of every peer on every file row", "value": counted - len(behind),
                "limit": counted, "cmp": ">=", "unit": "rows", "met": (not behind) if counted else None,
                "note": "; ".join(behind)})
    return out


def missing(res):
    """The file rows without a tlsnet measurement."""
    return [r["case"] + " " + r["metric"] for r in res.rows.values()
            if "median" not in r["cells"].get("tlsnet", {})]
