#!/usr/bin/python3
"""bench.py -- the benchmark runner behind bench/run.sh (`make bench`).

run.sh starts a private Dovecot (tests/lib/dovecot.sh) and then runs this script with the
DOVECOT_* variables in its environment. For each cell (RTT x message count x size x plaintext
or TLS) and each client it: refills the server mailbox, starts bench/delayproxy in front of
Dovecot, runs the client in its normal download-and-delete configuration into a fresh Maildir,
stops the proxy (which reports the bytes that crossed it), and checks that all N messages were
delivered and the server is empty. A run that did not is reported as failed, not timed.

Output: RESULTS.md, results.json and rtt.png in --out. See bench/run.sh for the knobs.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.environ.get("top_srcdir") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable or "/usr/bin/python3"
KIB, MIB = 1024, 1024 * 1024
USER, PASS = "test", "secret"

# Round trips a minimal pipelined session needs (the lower bound's latency part): connect,
# greeting, CAPA, USER+PASS, UIDL+LIST, the RETR batch, QUIT; implicit TLS 1.2 adds two.
ROUND_TRIPS = {"tcp": 7, "ssl": 9}

# Clients in table order. "seq" ones wait for every reply (their prior guess of round trips per
# message feeds the 5-minute skip rule until a measured run replaces it).
CLIENTS = [
    ("pop3", "pop3 dl", 0.0),
    # Only with POP3_BEFORE set (another build, e.g. the last commit's): before/after in one run.
    ("pop3-before", "pop3 dl (before)", 0.0),
    ("pop3-nopipe", "pop3 dl --pipelining=off", 2.0),
    ("mpop", "mpop", 0.0),
    ("fetchmail", "fetchmail", 3.0),
    ("getmail6", "getmail6", 3.0),
]
COMPETITORS = ("mpop", "fetchmail", "getmail6")


T0 = time.monotonic()


def log(msg):
    print("bench: [%5.0fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def env(name):
    v = os.environ.get(name)
    if not v:
        sys.exit("bench.py: %s not set (run bench/run.sh)" % name)
    return v


# ---------------------------------------------------------------- helpers

class Proc:
    """Run argv; measure wall time, and peak RSS with /usr/bin/time (GNU time's %M: the peak of
    the client and of the children it reaped). Not wait4 here: a child forked from this Python
    process keeps Python's high-water mark across exec, GNU time's is about 1 MiB."""

    def __init__(self, argv, cwd=None, extra_env=None, timeout=600, stdout=None, stderr=None,
                 rssfile=None):
        self.argv = argv
        e = dict(os.environ)
        e.update(extra_env or {})
        t0 = time.monotonic()
        p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rssfile] + argv, cwd=cwd,
                             env=e, stdin=subprocess.DEVNULL, stdout=stdout,
                             stderr=stderr, start_new_session=True)
        self.timed_out = False

        def kill():
            self.timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        self.wall = time.monotonic() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        self.rc = p.returncode
        try:
            self.maxrss_kib = int(open(rssfile).read().split()[-1])
        except (OSError, IndexError, ValueError):
            self.maxrss_kib = 0
        self.cpu = ru.ru_utime + ru.ru_stime


def wait_file(path, secs=10):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        time.sleep(0.01)
    return False


class Proxy:
    """bench/delayproxy in front of TARGET_PORT; .stop() returns (c2s, s2c) bytes."""

    def __init__(self, work, target_port, rtt_ms, listen_port=0):
        self.dir = work
        pf = os.path.join(work, "proxy.port")
        self.stats = os.path.join(work, "proxy.stats")
        for f in (pf, self.stats):
            if os.path.exists(f):
                os.unlink(f)
        self.err = open(os.path.join(work, "proxy.err"), "w")
        self.p = subprocess.Popen([env("DELAYPROXY"), "--rtt", str(rtt_ms), "--port-file", pf,
                                   "--stats", self.stats, "--listen",
                                   "127.0.0.1:%d" % listen_port, "127.0.0.1:%d" % target_port],
                                  stdout=subprocess.DEVNULL, stderr=self.err)
        if not wait_file(pf):
            self.p.kill()
            self.p.wait()
            self.err.close()
            if listen_port:
                raise OSError("delayproxy could not listen on port %d" % listen_port)
            sys.exit("bench.py: delayproxy did not start")
        self.port = int(open(pf).read())

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()
        try:
            f = open(self.stats).read().split()
            return int(f[3]), int(f[5])
        except (OSError, IndexError, ValueError):
            return None, None


def doveadm(*args):
    return subprocess.run(["doveadm", "-c", env("DOVECOT_CONF")] + list(args),
                          capture_output=True, text=True, timeout=120)


def server_count():
    r = doveadm("mailbox", "status", "-u", USER, "messages", "INBOX")
    if r.returncode != 0:
        raise RuntimeError("doveadm mailbox status: " + r.stderr.strip())
    return int(r.stdout.strip().split("messages=")[-1].split()[0])


def server_empty():
    doveadm("expunge", "-u", USER, "mailbox", "INBOX", "all")


def fill(srcdir, n):
    if server_count() != 0:
        server_empty()
    r = subprocess.run([PY, os.path.join(SRC, "tests/lib/dovecot-fill.py"), "--uid",
                        env("DOVECOT_MAIL_UID"), "--gid", env("DOVECOT_MAIL_GID"),
                        os.path.join(env("DOVECOT_DIR"), "mail", USER), srcdir],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("dovecot-fill.py: " + r.stderr.strip())
    # The count also makes Dovecot index the new files now, not during the client's login.
    c = server_count()
    if c != n:
        raise RuntimeError("server holds %d messages after filling %d" % (c, n))


def maildir_count(md):
    n = 0
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        if os.path.isdir(d):
            n += sum(1 for f in os.listdir(d) if not f.startswith("."))
    return n


def maildir_bytes(md):
    n = 0
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        if os.path.isdir(d):
            n += sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    return n


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- clients

def client_argv(name, rd, port, mode, md):
    """argv (and cwd, env) for one download-and-delete run of client NAME into Maildir MD.
    RD is a fresh per-run directory for the client's state files."""
    ca = env("DOVECOT_CA")
    if name in ("pop3", "pop3-nopipe", "pop3-before"):
        spec = ("tcp:%s@127.0.0.1:%d" % (USER, port) if mode == "tcp"
                else "ssl:%s@127.0.0.1!localhost:%d" % (USER, port))
        argv = [env("POP3_BEFORE" if name == "pop3-before" else "POP3"), "dl", "--state", os.path.join(rd, "state"),
                "--password-command", "echo " + PASS]
        if name == "pop3-nopipe":
            argv.append("--pipelining=off")
        if mode == "ssl":
            argv += ["--ca-file", ca]
        return argv + [spec, md], None, {}
    if name == "mpop":
        conf = os.path.join(rd, "mpoprc")
        tls = ("tls off\n" if mode == "tcp" else
               "tls on\ntls_starttls off\ntls_trust_file %s\ntls_host_override localhost\n" % ca)
        write_private(conf, "defaults\naccount bench\nhost 127.0.0.1\nport %d\nuser %s\n"
                      "password %s\nauth user\n%skeep off\nuidls_file %s\n"
                      "delivery maildir %s\n" % (port, USER, PASS, tls,
                                                 os.path.join(rd, "uidls"), md))
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        return ["mpop", "-C", conf, "-q", "bench"], None, {}
    if name == "fetchmail":
        rc = os.path.join(rd, "fetchmailrc")
        prc = os.path.join(rd, "procmailrc")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        # procmail delivers into the Maildir (a DEFAULT ending in "/"): tmp/, fsync, link into
        # new/ -- one procmail process per message, as fetchmail's --mda runs it.
        write_private(prc, "DEFAULT=%s/\nLOGFILE=/dev/null\nVERBOSE=off\n" % md)
        # sslproto '' turns fetchmail's opportunistic STLS off for the plaintext cells.
        sslopt = (" sslproto ''" if mode == "tcp" else
                  " ssl sslcertck sslcertfile \"%s\" sslcommonname localhost" % ca)
        write_private(rc, "set no syslog\nset no bouncemail\n"
                      "poll 127.0.0.1 service %d protocol pop3 auth password timeout 600\n"
                      "  user \"%s\" there with password \"%s\" is root here\n"
                      "  no keep fetchall%s\n"
                      "  mda \"/usr/bin/procmail -m %s\"\n" % (port, USER, PASS, sslopt, prc))
        return (["fetchmail", "-f", rc, "--idfile", os.path.join(rd, "fetchids"),
                 "--pidfile", os.path.join(rd, "fetchmail.pid"), "--nosyslog", "--silent"],
                None, {"HOME": rd, "FETCHMAILHOME": rd})
    if name == "getmail6":
        rc = os.path.join(rd, "getmailrc")
        gd = os.path.join(rd, "getmaildir")
        os.makedirs(gd, exist_ok=True)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        if mode == "tcp":
            ret = "type = SimplePOP3Retriever\n"
        else:
            ret = ("type = SimplePOP3SSLRetriever\nca_certs = %s\nssl_cert_hostname = localhost\n"
                   % ca)
        write_private(rc, "[retriever]\n%sserver = 127.0.0.1\nport = %d\nusername = %s\n"
                      "password = %s\n\n[destination]\ntype = Maildir\npath = %s/\n\n"
                      "[options]\ndelete = true\nread_all = true\nverbose = 0\n"
                      % (ret, port, USER, PASS, md))
        argv = ["getmail", "--rcfile", rc, "--getmaildir", gd, "--quiet"]
        if os.geteuid() == 0:
            # getmail refuses to deliver as root: run it as an ordinary user, as people do.
            uid, gid = int(env("DOVECOT_MAIL_UID")), int(env("DOVECOT_MAIL_GID"))
            for dirpath, dirs, files in os.walk(rd):
                for x in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                    os.chown(x, uid, gid)
            argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups"] + argv
        return argv, None, {"HOME": rd}
    raise ValueError(name)


def client_available(name):
    if name == "pop3-before":
        return bool(os.environ.get("POP3_BEFORE")) and os.access(os.environ["POP3_BEFORE"],
                                                                 os.X_OK)
    exe = {"pop3": env("POP3"), "pop3-nopipe": env("POP3"), "mpop": "mpop",
           "fetchmail": "fetchmail", "getmail6": "getmail"}[name]
    if os.path.isabs(exe):
        return os.access(exe, os.X_OK)
    if name == "fetchmail" and not shutil.which("procmail"):
        return False
    return shutil.which(exe) is not None


def client_version(name):
    try:
        if name in ("pop3", "pop3-nopipe"):
            return "this tree"
        if name == "pop3-before":
            return os.environ.get("POP3_BEFORE", "?")
        if name == "mpop":
            return subprocess.run(["mpop", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
        if name == "fetchmail":
            out = subprocess.run(["fetchmail", "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            for line in out.splitlines():
                if "release" in line:
                    return line.split("release")[1].split("+")[0].strip().join(
                        ("fetchmail ", ""))
        if name == "getmail6":
            return subprocess.run(["getmail", "--version"], capture_output=True,
                                  text=True).stdout.strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return "?"


# ---------------------------------------------------------------- calibration

def echo_server():
    """A thread that echoes every byte and greets with one line; returns its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            c.sendall(b"HELLO\n")
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass
        c.close()

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def sink_server():
    """A thread that reads and discards; answers 'OK\\n' at EOF. Returns its port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)

    def serve(c):
        buf = bytearray(1 << 20)
        while c.recv_into(buf):
            pass
        c.sendall(b"OK\n")
        c.close()

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def measure_rtt(work, echo_port, rtt):
    """Connect+greeting and the median of 10 request/response round trips through the proxy."""
    px = Proxy(work, echo_port, rtt)
    t0 = time.monotonic()
    c = socket.create_connection(("127.0.0.1", px.port), timeout=30)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.recv(6)
    conn = time.monotonic() - t0
    rts = []
    for i in range(10):
        t = time.monotonic()
        c.sendall(b"PING\n")
        got = b""
        while len(got) < 5:
            got += c.recv(5 - len(got))
        rts.append(time.monotonic() - t)
    c.close()
    px.stop()
    return conn, statistics.median(rts), min(rts), max(rts)


def measure_bulk(port, nbytes):
    """Seconds to push NBYTES to a sink at 127.0.0.1:PORT and get its answer."""
    buf = bytes(1 << 20)
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    t0 = time.monotonic()
    sent = 0
    while sent < nbytes:
        c.sendall(buf)
        sent += len(buf)
    c.shutdown(socket.SHUT_WR)
    c.recv(3)
    t = time.monotonic() - t0
    c.close()
    return t


def pop3_sink(port, n, use_tls):
    """A lock-free reader of the mailbox: USER, PASS, RETR 1..N, QUIT sent at once, replies
    discarded (no parsing, no disk, no DELE). What Dovecot (and TLS on its side, decrypted by
    OpenSSL here) can serve: the server-side bound of a throughput cell."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    c = raw
    if use_tls:
        ctx = ssl.create_default_context(cafile=env("DOVECOT_CA"))
        # The suite pop3 gets (TLS 1.2, ChaCha20-Poly1305), so that Dovecot does the same
        # encryption work as in the client runs.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
        except ssl.SSLError:
            pass
        c = ctx.wrap_socket(raw, server_hostname="localhost")
    t0 = time.monotonic()
    cmds = "USER %s\r\nPASS %s\r\n" % (USER, PASS)
    cmds += "".join("RETR %d\r\n" % i for i in range(1, n + 1)) + "QUIT\r\n"
    c.sendall(cmds.encode())
    buf = bytearray(1 << 20)
    total = 0
    tail = b""
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        total += k
        tail = (tail + bytes(buf[max(0, k - 64):k]))[-64:]
        if tail.endswith(b"+OK Logging out.\r\n") or b"Logging out" in tail:
            break
    t = time.monotonic() - t0
    suite = c.cipher()[0] if use_tls else None
    c.close()
    return total, t, suite


# ---------------------------------------------------------------- the runner

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.results = []   # one dict per (cell, client)
        self.t_start = time.monotonic()
        self.budget = a.budget
        self.lpm = {}       # client -> seconds per message at RTT 0 (learned)
        self.rpm = {name: g for name, _, g in CLIENTS}   # round trips per message (learned)
        self.rpm_measured = set()
        self.srcs = {}
        self.clients = [c for c, _, _ in CLIENTS if c in a.clients and client_available(c)]
        self.missing = [c for c, _, _ in CLIENTS if c in a.clients and c not in self.clients
                        and c != "pop3-before"]
        self.calib = {}

    def elapsed(self):
        if getattr(self, "elapsed_fixed", None) is not None:
            return self.elapsed_fixed
        return time.monotonic() - self.t_start

    def source(self, n, size):
        key = (n, size)
        if key in self.srcs:
            return self.srcs[key]
        d = os.path.join(self.work, "src-%dx%d" % (n, size))
        if size > 32 * MIB:
            # One huge message: the headers and body of a 4 MiB generated one, its body
            # repeated (genmail would take a minute to write 200 MiB).
            base = os.path.join(self.work, "src-base")
            subprocess.run([PY, os.path.join(SRC, "tests/lib/genmail.py"), base, "1", "--size",
                            str(4 * MIB), "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
            data = open(os.path.join(base, "0001.eml"), "rb").read()
            head, body = data.split(b"\n\n", 1)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "0001.eml"), "wb") as f:
                f.write(head + b"\n\n")
                left = size - len(head) - 2
                while left > 0:
                    f.write(body[:left])
                    left -= min(left, len(body))
        else:
            subprocess.run([PY, os.path.join(SRC, "tests/lib/genmail.py"), d, str(n), "--size",
                            str(size), "--seed", "1939"], check=True, stdout=subprocess.DEVNULL)
        files = sorted(os.listdir(d))
        total = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        self.srcs[key] = (d, total)
        return self.srcs[key]

    def predict(self, client, n, rtt):
        # Seconds per message at RTT 0 until measured: guesses from this kind of machine.
        prior = {"pop3": 0.002, "pop3-before": 0.002, "pop3-nopipe": 0.003, "mpop": 0.003, "fetchmail": 0.02,
                 "getmail6": 0.05}
        per = self.lpm.get(client, prior.get(client, 0.05))
        return per * n + self.rpm[client] * n * rtt / 1000.0 + ROUND_TRIPS["ssl"] * rtt / 1000.0

    def one_run(self, client, cell, k):
        rtt, n, size, mode = cell["rtt"], cell["n"], cell["size"], cell["mode"]
        src, _ = self.source(n, size)
        rd = os.path.join(self.work, "run")
        if os.path.exists(rd):
            shutil.rmtree(rd)
        os.makedirs(rd)
        md = os.path.join(rd, "Maildir")
        port = int(env("DOVECOT_POP3_PORT" if mode == "tcp" else "DOVECOT_POP3S_PORT"))
        if cell.get("warm"):
            # A warm cell: the same account fetched once before, untimed, with the same state
            # (pop3's journal and server memory, mpop's UIDL file; Dovecot's pop3-login keeps
            # its TLS ticket keys), then fetched again into a fresh Maildir: that run is timed.
            fill(src, n)
            px = Proxy(self.work, port, rtt)
            argv, cwd, cenv = client_argv(client, rd, px.port, mode, md)
            with open(os.path.join(rd, "prime.out"), "w") as out:
                pp = Proc(argv, cwd=cwd or rd, extra_env=cenv, timeout=self.a.run_timeout,
                          stdout=out, stderr=subprocess.STDOUT,
                          rssfile=os.path.join(self.work, "rss"))
            px.stop()
            if pp.rc != 0 or maildir_count(md) != n:
                log("  %s run %d: the priming fetch failed (exit %d, %d of %d delivered)" % (
                    client, k, pp.rc, maildir_count(md), n))
            server_empty()
            md = os.path.join(rd, "Maildir2")
            fill(src, n)
            # The same port again: pop3 keys what it remembers by user@host:port.
            try:
                px = Proxy(self.work, port, rtt, listen_port=px.port)
            except OSError as e:
                log("  %s run %d: %s; this run is not warm" % (client, k, e))
                px = Proxy(self.work, port, rtt)
        else:
            fill(src, n)
            px = Proxy(self.work, port, rtt)
        argv, cwd, cenv = client_argv(client, rd, px.port, mode, md)
        out = open(os.path.join(rd, "client.out"), "w")
        err = open(os.path.join(rd, "client.err"), "w")
        p = Proc(argv, cwd=cwd or rd, extra_env=cenv, timeout=self.a.run_timeout, stdout=out,
                 stderr=err, rssfile=os.path.join(self.work, "rss"))
        out.close()
        err.close()
        c2s, s2c = px.stop()
        got = maildir_count(md)
        left = server_count()
        with open(os.path.join(rd, "client.out"), errors="replace") as f:
            stdout_head = f.read(300).strip()
        ok_rc = p.rc == 0
        r = {"wall": p.wall, "rc": p.rc, "rss_kib": p.maxrss_kib, "cpu": p.cpu,
             "delivered": got, "left": left, "c2s": c2s, "s2c": s2c,
             "bytes": maildir_bytes(md), "stdout": stdout_head}
        why = []
        if p.timed_out:
            why.append("timed out after %d s" % self.a.run_timeout)
        if not ok_rc:
            why.append("exit %d" % p.rc)
        if got != n:
            why.append("delivered %d of %d" % (got, n))
        if left != 0:
            why.append("%d left on the server" % left)
        if why:
            r["failed"] = "; ".join(why)
            errtext = open(os.path.join(rd, "client.err")).read().strip()
            r["stderr"] = errtext[-400:]
            log("  %s run %d FAILED: %s %s" % (client, k, r["failed"], r["stderr"][-200:]))
            server_empty()
        else:
            log("  %s run %d: %.3f s, %d KiB, cpu %.2f s %s" % (
                client, k, p.wall, p.maxrss_kib, p.cpu, stdout_head[:100]))
        return r

    def run_cell(self, cell, clients, first_pass):
        """First pass: the clients predicted to be quick; the others are returned, to be run
        in a second pass over all cells, under the time budget."""
        rtt, n, size, mode = cell["rtt"], cell["n"], cell["size"], cell["mode"]
        log("cell %s RTT %d ms, %d x %s%s%s" % (mode, rtt, n, human(size),
                                               ", warm" if cell.get("warm") else "",
                                               "" if first_pass else " (slow clients)"))
        deferred = []
        active = []
        for client in clients:
            pred = self.predict(client, n, rtt) * (2 if cell.get("warm") else 1)
            if first_pass and pred > self.a.single_over:
                deferred.append(client)
                continue
            res = {"cell": cell, "client": client, "runs": []}
            self.results.append(res)
            if pred > self.a.skip_over:
                res["skipped"] = ("predicted %.0f s > %d s for one run" %
                                  (pred, self.a.skip_over))
                log("  %s skipped: %s" % (client, res["skipped"]))
                continue
            left = self.budget - self.elapsed()
            if not first_pass and pred > left:
                res["skipped"] = ("time budget: predicted %.0f s, %.0f s of the %d s budget left"
                                  % (pred, max(0, left), self.budget))
                log("  %s skipped: %s" % (client, res["skipped"]))
                continue
            active.append((client, res))
        # Interleaved: run k of every client, then run k+1, so that a change in the machine's
        # load (other jobs) falls on all clients alike rather than on whichever ran then.
        for k in range(1, cell.get("runs", self.a.runs) + 1):
            longest = 0.0
            for client, res in list(active):
                r = self.one_run(client, cell, k)
                res["runs"].append(r)
                if "failed" in r:
                    active.remove((client, res))
                    continue
                longest = max(longest, r["wall"])
                if cell.get("warm"):
                    pass  # a warm run needs fewer round trips: it predicts nothing else
                elif rtt == 0 and size <= 64 * KIB:
                    self.lpm[client] = r["wall"] / n
                elif rtt > 0 and size <= 64 * KIB and client not in self.rpm_measured:
                    per = self.lpm.get(client, 0)
                    self.rpm[client] = max(0.0, (r["wall"] - per * n) / (n * rtt / 1000.0))
                    self.rpm_measured.add(client)
                # Runs dominated by round trips vary little; above this, one run is enough.
                if r["wall"] > self.a.single_over:
                    active.remove((client, res))
            if not active:
                break
            if k < self.a.runs and self.elapsed() + longest * len(active) > self.budget:
                break
        return deferred

    # ---------------------------------------------------------------- calibration

    def calibrate(self):
        log("calibrating the proxy")
        echo = echo_server()
        rows = []
        for rtt in (0, 50, 200, 600):
            conn, med, lo, hi = measure_rtt(self.work, echo, rtt)
            rows.append({"rtt": rtt, "connect_greeting": conn, "rt_median": med, "rt_min": lo,
                         "rt_max": hi})
            log("  RTT %d ms: request/response median %.2f ms (min %.2f, max %.2f), "
                "connect+greeting %.2f ms (ideal %d)" % (rtt, med * 1e3, lo * 1e3, hi * 1e3,
                                                         conn * 1e3, 2 * rtt))
        self.calib["rtt"] = rows
        sink = sink_server()
        nb = self.a.bulk_mib * MIB
        measure_bulk(sink, 16 * MIB)   # warm up
        direct = min(measure_bulk(sink, nb) for _ in range(3))
        px = Proxy(self.work, sink, 0)
        proxied = min(measure_bulk(px.port, nb) for _ in range(3))
        px.stop()
        self.calib["loopback_direct"] = nb / direct
        self.calib["loopback_proxy"] = nb / proxied
        log("  loopback: %.0f MB/s direct, %.0f MB/s through the proxy" %
            (nb / direct / 1e6, nb / proxied / 1e6))
        # mbedTLS decryption rates.
        r = subprocess.run([env("TLSSPEED"), "128"], capture_output=True, text=True)
        speeds = {}
        for line in r.stdout.splitlines():
            f = line.split()
            if len(f) == 2 and f[1] != "unavailable":
                speeds[f[0]] = float(f[1]) * 1e6
        self.calib["mbedtls_decrypt"] = speeds
        log("  mbedTLS decryption: " + ", ".join("%s %.0f MB/s" % (k, v / 1e6)
                                                 for k, v in speeds.items()))
        # The suite pop3 negotiates with this Dovecot.
        self.calib["suite"] = self.negotiated_suite()
        log("  pop3 negotiates: %s" % self.calib["suite"])

    def negotiated_suite(self):
        rd = os.path.join(self.work, "suite")
        os.makedirs(rd, exist_ok=True)
        src, _ = self.source(1, 4 * KIB)
        fill(src, 1)
        p = subprocess.run([env("POP3"), "-v", "dl", "--state", os.path.join(rd, "state"),
                            "--password-command", "echo " + PASS, "--ca-file",
                            env("DOVECOT_CA"), "ssl:%s@127.0.0.1!localhost:%s" %
                            (USER, env("DOVECOT_POP3S_PORT")), os.path.join(rd, "md")],
                           capture_output=True, text=True, timeout=60)
        server_empty()
        for line in p.stderr.splitlines():
            if "TLS established" in line:
                return line.split("TLS established:", 1)[1].strip()
        return "unknown"

    def server_bound(self, cell):
        """Dovecot's own serving rate for a throughput cell, with no client work at all."""
        n, size, mode = cell["n"], cell["size"], cell["mode"]
        src, total = self.source(n, size)
        best = None
        for _ in range(2):
            fill(src, n)
            port = int(env("DOVECOT_POP3_PORT" if mode == "tcp" else "DOVECOT_POP3S_PORT"))
            px = Proxy(self.work, port, 0)
            nbytes, t, suite = pop3_sink(px.port, n, mode == "ssl")
            px.stop()
            if best is None or t < best[1]:
                best = (nbytes, t, suite)
        server_empty()
        return {"bytes": best[0], "seconds": best[1], "rate": total / best[1],
                "openssl_suite": best[2]}


def human(size):
    if size >= MIB:
        return "%d MiB" % (size // MIB)
    return "%d KiB" % (size // KIB)


def med(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- report

def summarize(b):
    """Per (cell, client): median time, rates, RSS; per cell: the lower bound."""
    cells = []
    bykey = {}
    order = [c for c, _, _ in CLIENTS]
    for res in sorted(b.results, key=lambda r: order.index(r["client"])):
        key = json.dumps({k: v for k, v in res["cell"].items() if k != "server_bound"},
                         sort_keys=True)
        if key not in bykey:
            bykey[key] = {"key": key, "cell": res["cell"], "rows": []}
    for res in b.results:
        key = json.dumps({k: v for k, v in res["cell"].items() if k != "server_bound"},
                         sort_keys=True)
        if bykey[key] not in cells:
            cells.append(bykey[key])
    for res in sorted(b.results, key=lambda r: order.index(r["client"])):
        key = json.dumps({k: v for k, v in res["cell"].items() if k != "server_bound"},
                         sort_keys=True)
        ok = [r for r in res["runs"] if "failed" not in r]
        failed = [r for r in res["runs"] if "failed" in r]
        row = {"client": res["client"], "n_runs": len(ok), "skipped": res.get("skipped"),
               "failed": failed[0]["failed"] if failed else None,
               "stderr": failed[0].get("stderr") if failed else None}
        if ok and not failed:
            row["time"] = med([r["wall"] for r in ok])
            row["times"] = [r["wall"] for r in ok]
            row["rss_kib"] = max(r["rss_kib"] for r in ok)
            row["cpu"] = med([r["cpu"] for r in ok])
            row["wire"] = med([(r["c2s"] or 0) + (r["s2c"] or 0) for r in ok])
            row["bytes"] = ok[0]["bytes"]
        bykey[key]["rows"].append(row)
    rate = b.calib.get("loopback_proxy")
    for c in cells:
        cell = c["cell"]
        times = {r["client"]: r["time"] for r in c["rows"] if r.get("time") is not None}
        wires = [r["wire"] for r in c["rows"] if r["client"] == "pop3" and r.get("wire")]
        if not wires:
            wires = [r["wire"] for r in c["rows"] if r.get("wire")]
        wire = min(wires) if wires else None
        c["wire"] = wire
        c["lb"] = (ROUND_TRIPS[cell["mode"]] * cell["rtt"] / 1000.0 +
                   (wire / rate if wire and rate else 0))
        for r in c["rows"]:
            if r.get("time") is None:
                continue
            r["msgs_s"] = cell["n"] / r["time"]
            r["mb_s"] = cell["n"] * cell["size"] / r["time"] / 1e6
            r["vs_lb"] = r["time"] / c["lb"] if c["lb"] else None
            fam = "pop3" if r["client"].startswith("pop3") else r["client"]
            others = [t for cl, t in times.items()
                      if (("pop3" if cl.startswith("pop3") else cl) != fam)]
            r["vs_best_other"] = r["time"] / min(others) if others else None
    return cells


def fmt(x, spec, dash="–"):
    return dash if x is None else spec % x


def cell_title(cell):
    return "%s, RTT %d ms, %d × %s%s" % ("plaintext (tcp:)" if cell["mode"] == "tcp" else
                                         "implicit TLS (ssl:)", cell["rtt"], cell["n"],
                                         human(cell["size"]),
                                         ", warm (second fetch timed)" if cell.get("warm")
                                         else "")


def write_markdown(b, cells, path, started, targets):
    L = []
    w = L.append
    cal = b.calib
    w("# Benchmark results")
    w("")
    w("Produced by `make bench` (bench/run.sh → bench/bench.py) on %s. Total wall time %.0f s."
      % (started, b.elapsed()))
    w("")
    w("Machine: %s, %d CPUs, load average at start %s; Linux %s. Server: Dovecot %s on "
      "127.0.0.1 (private instance, `mail_fsync = optimized`), every client connected "
      "through bench/delayproxy, also at RTT 0. Maildirs and the server's mail on `%s` "
      "(%s), not tmpfs."
      % (platform.machine(), os.cpu_count(), b.a.load, platform.release(),
         b.a.dovecot_version, b.work, b.a.fstype))
    w("")
    w("Each figure is the median of %d runs, except where the **n** column says 1: a run "
      "longer than %d s is dominated by round trips and was run once to keep `make bench` "
      "within its time budget. Before every run the mailbox is refilled (and indexed by "
      "Dovecot); after it, all N messages must be in the client's Maildir and the server "
      "must be empty, or the run is reported as failed and not timed. Times are wall-clock "
      "from starting the client process to its exit; **CPU s** is the user + system time of "
      "the client and its children. The runs of a cell are interleaved (run 1 of every "
      "client, then run 2, ...), so that other jobs on the machine slow all clients alike."
      % (b.a.runs, b.a.single_over))
    w("")
    w("**Warm** cells time the second fetch of the same account: each run first fetches the "
      "mailbox once, untimed, with the same state files (pop3's journal and its memory of the "
      "server: capabilities and the TLS session; mpop's UIDL file), then refills it and times "
      "the fetch into a fresh Maildir. Dovecot's pop3-login runs as one long-lived process "
      "(`service_count = 0`), so its TLS session tickets stay valid between the two, as they "
      "do in a production pop3-login pool. A warm `pop3 dl` sends its first flight without "
      "waiting for CAPA and resumes the TLS session, so it may need fewer round trips than "
      "LB counts.")
    w("")
    w("**LB** (lower bound) = %d round trips in plaintext (connect, greeting, CAPA, USER+PASS, "
      "UIDL+LIST, the RETR batch, QUIT), %d with implicit TLS 1.2, plus the bytes that "
      "crossed the proxy in `pop3 dl`'s run at the loopback rate through the proxy measured "
      "in this run (%.0f MB/s). It leaves out the server's own work and the disk, so at "
      "small RTT no client comes near it." % (ROUND_TRIPS["tcp"], ROUND_TRIPS["ssl"],
                                              cal.get("loopback_proxy", 0) / 1e6))
    w("")
    w("**÷ RTT**: the time counted in round trips (where RTT > 0); a pipelined client needs "
      "a fixed number, a lock-step one about two or three per message.")
    w("")
    w("**vs best other**: time divided by the fastest *other program* in the same cell "
      "(for `pop3 dl` rows: the fastest of mpop, fetchmail, getmail6; for the others: the "
      "fastest of the rest, `pop3 dl` included). Below 1 means faster than all of them.")
    w("")
    if b.missing:
        w("Not installed, so not measured: %s." % ", ".join(b.missing))
        w("")
    w("![time against RTT](rtt.png)")
    w("")
    w("## Targets")
    w("")
    for line in targets:
        w("- " + line)
    w("")
    w("## Results")
    for c in cells:
        cell = c["cell"]
        w("")
        w("### %s" % cell_title(cell))
        w("")
        big = cell["size"] > 64 * KIB
        w("LB = %.3f s (%d × %d ms + %s wire bytes at %.0f MB/s)." % (
            c["lb"], ROUND_TRIPS[cell["mode"]], cell["rtt"],
            fmt(c["wire"], "%d"), cal.get("loopback_proxy", 0) / 1e6))
        w("")
        if big:
            w("| client | seconds | MB/s | msgs/s | × LB | vs best other | peak RSS | CPU s | n |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        else:
            w("| client | seconds | msgs/s | × LB | vs best other | ÷ RTT | peak RSS | CPU s | n |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in c["rows"]:
            label = dict((k, v) for k, v, _ in CLIENTS)[r["client"]]
            if r.get("skipped"):
                w("| %s | skipped: %s |%s" % (label, r["skipped"], " |" * 7))
                continue
            if r.get("failed"):
                w("| %s | **failed**: %s |%s" % (label, r["failed"].replace("|", "/"), " |" * 7))
                continue
            cols = [label, fmt(r["time"], "%.3f")]
            if big:
                cols.append(fmt(r["mb_s"], "%.1f"))
            cols += [fmt(r["msgs_s"], "%.1f"), fmt(r["vs_lb"], "%.2f"),
                     fmt(r["vs_best_other"], "%.3f")]
            if not big:
                cols.append(fmt(r["time"] / (cell["rtt"] / 1000.0) if cell["rtt"] else None,
                                "%.1f"))
            cols += ["%.1f MiB" % (r["rss_kib"] / 1024.0),
                     fmt(r["cpu"], "%.2f"), str(r["n_runs"])]
            w("| " + " | ".join(cols) + " |")
        if "server_bound" in cell:
            sb = cell["server_bound"]
            w("")
            w("Dovecot alone (a reader that pipelines RETR 1..N through the proxy and discards "
              "the replies: no parsing, no disk, no DELE%s): %.3f s, %.1f MB/s." % (
                  ", OpenSSL decrypting %s" % sb["openssl_suite"] if sb["openssl_suite"] else "",
                  sb["seconds"], sb["rate"] / 1e6))
    w("")
    for line in notes(b, cells):
        w(line)
    w("## Calibration (same run)")
    w("")
    w("| RTT set | request/response median (min–max) | connect + greeting (ideal 2 RTT) |")
    w("|---:|---|---|")
    for row in cal.get("rtt", []):
        w("| %d ms | %.2f ms (%.2f–%.2f) | %.2f ms |" % (
            row["rtt"], row["rt_median"] * 1e3, row["rt_min"] * 1e3, row["rt_max"] * 1e3,
            row["connect_greeting"] * 1e3))
    w("")
    w("Loopback bulk rate: %.0f MB/s direct, %.0f MB/s through the proxy at RTT 0 (Python "
      "sender and sink, 1 MiB writes, best of 3 × %d MiB)." % (
          cal.get("loopback_direct", 0) / 1e6, cal.get("loopback_proxy", 0) / 1e6,
          b.a.bulk_mib))
    w("")
    w("mbedTLS %s decryption (bench/tlsspeed, 16 KiB records): %s. `pop3 dl` negotiates %s "
      "with this Dovecot." % (b.a.mbedtls_version, ", ".join(
          "%s %.0f MB/s" % (k, v / 1e6) for k, v in cal.get("mbedtls_decrypt", {}).items()),
          cal.get("suite", "?")))
    w("")
    w("Client versions: %s." % "; ".join("%s: %s" % (c, client_version(c)) for c in b.clients))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def notes(b, cells):
    """How the clients were set up, what bounds each kind of cell, what the proxy leaves out."""
    cal = b.calib
    L = [""]
    w = L.append

    def row(mode, rtt, n, size, client):
        for c in cells:
            cl = c["cell"]
            if (cl["mode"], cl["rtt"], cl["n"], cl["size"]) == (mode, rtt, n, size) and \
                    not cl.get("warm"):
                for r in c["rows"]:
                    if r["client"] == client and r.get("time") is not None:
                        return c, r
                return c, None
        return None, None

    w("## How each client was configured")
    w("")
    w("Every client gets a fresh Maildir and fresh state files (UIDL lists, journal) per run, "
      "connects to the proxy's port on 127.0.0.1, logs in with USER/PASS and deletes what it "
      "downloaded. Exact files: `client_argv()` in bench/bench.py.")
    w("")
    w("- **pop3 dl**: `pop3 dl --state STATE --password-command 'echo secret' "
      "tcp:test@127.0.0.1:PORT MAILDIR`; over TLS `ssl:test@127.0.0.1!localhost:PORT "
      "--ca-file CA`. Each message is written to tmp/, fsync'ed and renamed into new/; new/ "
      "and the UID journal are fsync'ed before QUIT (the durability barrier, always on).")
    w("- **pop3 dl --pipelining=off**: the same with one command at a time: what pipelining "
      "itself is worth.")
    w("- **mpop**: an mpoprc with `auth user`, `tls off` (or `tls on`, `tls_starttls off`, "
      "`tls_trust_file CA`, `tls_host_override localhost`), `keep off`, a per-run "
      "`uidls_file` and `delivery maildir MAILDIR`; `pipelining` left at its default "
      "(auto: Dovecot advertises PIPELINING). mpop's Maildir delivery is its own (tmp/, then "
      "new/).")
    w("- **fetchmail**: a fetchmailrc `poll 127.0.0.1 service PORT protocol pop3 auth "
      "password`, `no keep fetchall`, `sslproto ''` in plaintext (no opportunistic STLS), "
      "`ssl sslcertck sslcertfile CA sslcommonname localhost` over TLS, and `mda "
      "\"procmail -m RC\"` with `DEFAULT=MAILDIR/` in RC: fetchmail has no Maildir writer of "
      "its own, and procmail is the delivery agent it is usually paired with (one procmail "
      "process per message; it writes tmp/, fsyncs, links into new/). Runs as root, with "
      "`--idfile` and `--pidfile` in the run's directory.")
    w("- **getmail6**: `SimplePOP3Retriever` (or `SimplePOP3SSLRetriever` with `ca_certs` "
      "and `ssl_cert_hostname = localhost`), destination `type = Maildir`, options `delete = "
      "true`, `read_all = true`. getmail refuses to deliver as root, so it runs as the user "
      "nobody (setpriv), as an ordinary user would run it; it forks a child per message to "
      "write the Maildir file.")
    w("")
    w("## What bounds each cell")
    w("")
    rt = []
    for rtt in (200, 600):
        c, r = row("tcp", rtt, 100, 4 * KIB, "pop3")
        if r:
            rt.append("%.2f RTT at %d ms" % (r["time"] / (rtt / 1000.0), rtt))
    w("- **RTT 200 and 600 ms, 100 messages**: round trips. A pipelined client pays a fixed "
      "number per session: LB counts %d in plaintext; `pop3 dl` took %s. A lock-step client "
      "pays one per command and message: RETR, then DELE (fetchmail also waits for its MDA "
      "between them; getmail6 also asks for each message's UIDL/LIST), which is what the "
      "÷ RTT column shows." % (ROUND_TRIPS["tcp"], " and ".join(rt) if rt else "–"))
    c, r = row("tcp", 50, 1000, 4 * KIB, "pop3")
    c0, r0 = row("tcp", 0, 1000, 4 * KIB, "pop3")
    w("- **RTT 50 ms, 1,000 messages**: for a pipelined client, the round trips (%s) plus "
      "the server's own work on 1,000 RETRs and DELEs and the client's 1,000 fsyncs, which "
      "the RTT 0 cell measures (`pop3 dl`: %s s there). LB leaves both out." % (
          c and "%.2f s of LB" % c["lb"] or "–", r0 and "%.3f" % r0["time"] or "–"))
    w("- **RTT 0, 1,000 × 4 KiB**: per-message costs: Dovecot's work per RETR and DELE "
      "(and the expunge of 1,000 files at QUIT), the client's per-message CPU, and one "
      "fsync per file for the clients that make each message durable (`pop3 dl`, procmail "
      "for fetchmail, getmail6). fetchmail pays a procmail process per message, getmail6 a "
      "fork per message. The wire bytes are negligible (LB is milliseconds); on two shared "
      "cores the spread between runs is large.")
    for mode in ("tcp", "ssl"):
        c, r = row(mode, 0, 20, 5 * MIB, "pop3")
        if not c:
            continue
        sbd = c["cell"].get("server_bound")
        parts = []
        if sbd:
            parts.append("Dovecot alone serves the 20 messages at %.0f MB/s (a reader that "
                         "pipelines RETR 1..20 and discards the bytes%s)" % (
                             sbd["rate"] / 1e6, ", decrypting with OpenSSL " +
                             sbd["openssl_suite"] if sbd.get("openssl_suite") else ""))
        parts.append("the proxy forwards %.0f MB/s" % (cal.get("loopback_proxy", 0) / 1e6))
        if mode == "ssl":
            cipher = suite_cipher(cal.get("suite", ""))
            rate = cal.get("mbedtls_decrypt", {}).get(cipher)
            if rate:
                parts.append("mbedTLS decrypts %s at %.0f MB/s on one core" % (cipher,
                                                                               rate / 1e6))
        if r:
            parts.append("`pop3 dl` reached %.0f MB/s using %.2f s of CPU for %.2f s of wall "
                         "time" % (r["mb_s"], r["cpu"], r["time"]))
        w("- **5 MiB × 20, %s**: %s. With two cores shared by Dovecot (%s), the proxy and "
          "the client, the transfer is bounded by whichever of these is slowest plus the "
          "competition for the cores; writing 100 MiB and fsyncing it costs the same for "
          "every client that fsyncs." % (
              "plaintext" if mode == "tcp" else "TLS", "; ".join(parts),
              "its pop3 process, and over TLS its login process that does the TLS"))
    w("")
    w("## What the proxy does not model")
    w("")
    w("bench/delayproxy delays every byte by RTT/2 each way and charges a connect one RTT, "
      "but it has no TCP slow start, loss or receive window. On a real path a new "
      "connection starts with a congestion window of 10 segments (about 14 KiB) that "
      "doubles every round trip, so a batch reply of B bytes takes about log2(B / 14 KiB) "
      "round trips instead of one: for 100 × 4 KiB (about 420 KB) that is about 4 more "
      "RTTs (2.4 s at 600 ms) and for 1,000 × 4 KiB (4.2 MB) about 8 more (0.4 s at 50 ms); "
      "the throughput cells run at RTT 0, where it costs nothing. Lock-step clients hardly notice (each "
      "of their flights is one small message), so on a real path the pipelined clients' "
      "advantage shrinks by those few RTTs, and with loss a lost segment costs at least "
      "one more RTT. The bandwidth is not limited either (`--mbit` can; the benchmark does "
      "not use it).")
    w("")
    return L


def suite_cipher(suite):
    s = suite.upper()
    if "CHACHA20" in s:
        return "CHACHA20-POLY1305"
    if "AES-128-GCM" in s or "AES_128_GCM" in s:
        return "AES-128-GCM"
    if "AES-256-GCM" in s or "AES_256_GCM" in s:
        return "AES-256-GCM"
    return None


def check_targets(b, cells):
    """The issue's targets, read off the table: one line each, met or missed."""
    out = []

    def find(mode, rtt, n, size):
        for c in cells:
            cl = c["cell"]
            if (cl["mode"], cl["rtt"], cl["n"], cl["size"]) == (mode, rtt, n, size) and \
                    not cl.get("warm"):
                return c
        return None

    def t(c, client):
        if not c:
            return None
        for r in c["rows"]:
            if r["client"] == client:
                return r.get("time")
        return None

    def mark(ok):
        return "**met**" if ok else ("**missed**" if ok is not None else "not measured")

    for rtt, n in ((200, 100), (600, 100)):
        for mode in ("tcp", "ssl"):
            c = find(mode, rtt, n, 4 * KIB)
            tp = t(c, "pop3")
            ok = None if tp is None else tp <= 1.2 * c["lb"]
            out.append("%s at %d ms: `pop3 dl` within 1.2× of LB: %s (%s s, LB %s s)" % (
                mode, rtt, mark(ok), fmt(tp, "%.3f"), fmt(c and c["lb"], "%.3f")))
    for rtt, n in ((50, 1000), (200, 100), (600, 100)):
        for mode in ("tcp", "ssl"):
            c = find(mode, rtt, n, 4 * KIB)
            tp, tm = t(c, "pop3"), t(c, "mpop")
            ok = None if tp is None or tm is None else tp < tm
            out.append("%s at %d ms: faster than mpop: %s (%s s vs %s s)" % (
                mode, rtt, mark(ok), fmt(tp, "%.3f"), fmt(tm, "%.3f")))
    for rtt in (200, 600):
        c = find("tcp", rtt, 100, 4 * KIB)
        tp = t(c, "pop3")
        for other in ("fetchmail", "getmail6"):
            to = t(c, other)
            ok = None if tp is None or to is None else to / tp >= 20
            out.append("tcp at %d ms: ≥ 20× faster than %s: %s (%s×)" % (
                rtt, other, mark(ok), fmt(to and tp and to / tp, "%.1f")))
    for mode in ("tcp", "ssl"):
        c = find(mode, 0, 1000, 4 * KIB)
        tp = t(c, "pop3")
        others = [t(c, o) for o in COMPETITORS if t(c, o) is not None]
        ok = None if tp is None or not others else tp < min(others)
        out.append("%s at 0 ms × 1,000: faster than every other client (fsync on): %s "
                   "(%s s vs best %s s)" % (mode, mark(ok), fmt(tp, "%.3f"),
                                            fmt(min(others) if others else None, "%.3f")))
    ct = find("tcp", 0, 20, 5 * MIB)
    cs = find("ssl", 0, 20, 5 * MIB)
    tp, tm = t(ct, "pop3"), t(ct, "mpop")
    ok = None if tp is None or tm is None else tp <= tm
    out.append("5 MiB over tcp: at least mpop's throughput: %s (%s s vs %s s)" % (
        mark(ok), fmt(tp, "%.3f"), fmt(tm, "%.3f")))
    ts = t(cs, "pop3")
    cipher = suite_cipher(b.calib.get("suite", ""))
    rate = b.calib.get("mbedtls_decrypt", {}).get(cipher)
    if ts is not None and tp is not None and rate and cs.get("wire"):
        allowed = tp + cs["wire"] / rate
        out.append("5 MiB over ssl: no slower than tcp time + wire bytes at mbedTLS %s "
                   "decryption (%.0f MB/s): %s (%.3f s vs %.3f s allowed)" % (
                       cipher, rate / 1e6, mark(ts <= allowed), ts, allowed))
    else:
        out.append("5 MiB over ssl vs tcp + decryption: not measured")

    def cpu(c, client):
        for r in (c or {}).get("rows", []):
            if r["client"] == client:
                return r.get("cpu")
        return None
    tm, cp, cm = t(cs, "mpop"), cpu(cs, "pop3"), cpu(cs, "mpop")
    ok = None if None in (ts, tm, cp, cm) else ts <= tm and cp <= cm
    out.append("5 MiB over ssl: at least mpop's throughput and no more CPU: %s (%s s and %s CPU s "
               "vs %s s and %s CPU s)" % (mark(ok), fmt(ts, "%.3f"), fmt(cp, "%.2f"),
                                          fmt(tm, "%.3f"), fmt(cm, "%.2f")))
    worst = None
    for c in cells:
        for r in c["rows"]:
            if r["client"] in ("pop3", "pop3-nopipe") and r.get("rss_kib"):
                if worst is None or r["rss_kib"] > worst[0]:
                    worst = (r["rss_kib"], cell_title(c["cell"]), r["client"])
    out.append("peak RSS of `pop3 dl` below 8 MiB in every cell: %s (worst %s MiB, %s, %s)" % (
        mark(None if worst is None else worst[0] < 8 * 1024),
        fmt(worst and worst[0] / 1024.0, "%.1f"), worst and worst[1], worst and worst[2]))
    return out


def write_plot(b, cells, outdir):
    """rtt.png: seconds against RTT, one line per client, log y; plaintext and TLS panels."""
    if not shutil.which("gnuplot"):
        log("gnuplot not installed: no plot")
        return False
    datf = os.path.join(tempfile.mkdtemp(prefix="bench-plot."), "plot.dat")
    series = []
    lbs = {}
    with open(datf, "w") as f:
        for mode in ("tcp", "ssl"):
            for client, label, _ in CLIENTS + [("LB", "lower bound", 0)]:
                pts = []
                for c in cells:
                    cl = c["cell"]
                    if cl["mode"] != mode or cl["size"] != 4 * KIB or cl.get("warm"):
                        continue
                    if client == "LB":
                        pts.append((cl["rtt"], c["lb"]))
                        continue
                    for r in c["rows"]:
                        if r["client"] == client and r.get("time") is not None:
                            pts.append((cl["rtt"], r["time"]))
                if not pts:
                    continue
                pts.sort()
                f.write("# %s %s\n" % (mode, client))
                for x, y in pts:
                    f.write("%d %.6f\n" % ({0: 0, 50: 1, 200: 2, 600: 3}[x], y))
                f.write("\n\n")
                series.append((mode, client, label))
    idx = 0
    plots = {"tcp": [], "ssl": []}
    styles = {"pop3": "lw 3 lc rgb '#d62728' pt 7", "pop3-nopipe": "lw 2 lc rgb '#ff9896' pt 6",
              "mpop": "lw 2 lc rgb '#1f77b4' pt 5", "fetchmail": "lw 2 lc rgb '#2ca02c' pt 9",
              "getmail6": "lw 2 lc rgb '#9467bd' pt 11",
              "LB": "lw 1 dt 2 lc rgb '#000000' pt 0"}
    for mode, client, label in series:
        plots[mode].append("'%s' index %d using 1:2 with linespoints %s title '%s'" % (
            datf, idx, styles[client], label))
        idx += 1
    png = os.path.join(outdir, "rtt.png")
    gp = ["set terminal pngcairo size 1700,600 font 'sans,11'",
          "set output '%s'" % png,
          "set multiplot layout 1,2 title 'Download and delete from Dovecot 2.3 through a "
          "delay proxy: RTT and messages of 4 KiB against median seconds (log scale, "
          "lower is better; the lower bound at 0 ms is off the scale)'",
          "set logscale y", "set grid ytics mytics xtics",
          'set xtics ("0 ms\\n1000 msgs" 0, "50 ms\\n1000 msgs" 1, "200 ms\\n100 msgs" 2, '
          '"600 ms\\n100 msgs" 3)',
          "set xrange [-0.2:3.2]", "set yrange [0.2:400]", "set ylabel 'seconds'",
          "unset xlabel", "set bmargin 4",
          "set key outside right center vertical"]
    for mode, title in (("tcp", "plaintext (tcp:)"), ("ssl", "implicit TLS (ssl:)")):
        gp.append("set title '%s'" % title)
        if plots[mode]:
            gp.append("plot " + ", ".join(plots[mode]))
        else:
            gp.append("plot 1 notitle")
    gp.append("unset multiplot")
    r = subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr.strip())
        return False
    return True


def report_only(a):
    with open(a.from_json) as f:
        j = json.load(f)
    meta = j.get("meta", {})
    for k, v in meta.items():
        if k not in ("elapsed", "clients", "missing"):
            setattr(a, k, v)
    b = Bench(a)
    b.work = meta.get("work", a.work)
    b.results = j["results"]
    b.calib = j["calibration"]
    b.elapsed_fixed = meta.get("elapsed", a.elapsed)
    seen = []
    for r in b.results:
        if r["client"] not in seen:
            seen.append(r["client"])
    b.clients = meta.get("clients", seen)
    b.missing = meta.get("missing", [])
    cells = summarize(b)
    targets = check_targets(b, cells)
    write_plot(b, cells, a.out)
    write_markdown(b, cells, os.path.join(a.out, "RESULTS.md"), j["started"], targets)
    for line in targets:
        print("target: " + line)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--budget", type=int, default=2100, help="seconds for all cells")
    ap.add_argument("--skip-over", type=int, default=300,
                    help="skip a client in a cell when one run would take longer")
    ap.add_argument("--single-over", type=float, default=30,
                    help="one run only when the first took longer than this")
    ap.add_argument("--run-timeout", type=int, default=600)
    ap.add_argument("--bulk-mib", type=int, default=512)
    ap.add_argument("--clients", default=",".join(c for c, _, _ in CLIENTS))
    ap.add_argument("--cells", default="all",
                    help="all, or a comma list of MODE:RTT:N:SIZE[:warm] (e.g. tcp:200:100:4096; "
                    "warm: fetch the account once untimed, then time the second fetch)")
    ap.add_argument("--load", default="?")
    ap.add_argument("--fstype", default="?")
    ap.add_argument("--dovecot-version", default="2.3")
    ap.add_argument("--mbedtls-version", default="2.28")
    ap.add_argument("--from-json", help="rewrite RESULTS.md and rtt.png from a results.json")
    ap.add_argument("--elapsed", type=float, help="with --from-json: total seconds to print")
    a = ap.parse_args()
    a.clients = a.clients.split(",")
    os.makedirs(a.out, exist_ok=True)
    if a.from_json:
        return report_only(a)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    b = Bench(a)
    b.calibrate()

    small = 4 * KIB
    if a.cells == "all":
        # Order = priority: the targets' cells first, so that the budget cuts the least
        # informative ones (sequential clients over TLS at high RTT) if anything.
        plan = [("tcp", 0, 1000, small), ("tcp", 200, 100, small), ("tcp", 600, 100, small),
                ("tcp", 0, 20, 5 * MIB), ("ssl", 0, 20, 5 * MIB), ("tcp", 0, 1, 200 * MIB),
                ("ssl", 0, 1000, small), ("tcp", 50, 1000, small), ("ssl", 200, 100, small),
                ("ssl", 600, 100, small), ("ssl", 50, 1000, small),
                # Warm: the second fetch of the same account (what a daemon does every time).
                ("tcp", 200, 100, small, "warm"), ("ssl", 200, 100, small, "warm"),
                ("tcp", 600, 100, small, "warm"), ("ssl", 600, 100, small, "warm")]
    else:
        plan = []
        for spec in a.cells.split(","):
            f = spec.split(":")
            plan.append((f[0], int(f[1]), int(f[2]), int(f[3])) + tuple(f[4:5]))
    later = []
    for mode, rtt, n, size, *flags in plan:
        cell = {"mode": mode, "rtt": rtt, "n": n, "size": size}
        if "warm" in flags:
            cell["warm"] = True
        if size > 64 * MIB:
            cell["runs"] = 1
        if n * size >= 64 * MIB and size <= 64 * MIB:
            try:
                cell["server_bound"] = b.server_bound(cell)
                log("Dovecot alone, %s %d x %s: %.3f s, %.0f MB/s" % (
                    mode, n, human(size), cell["server_bound"]["seconds"],
                    cell["server_bound"]["rate"] / 1e6))
            except (OSError, RuntimeError) as e:
                log("server bound: %s" % e)
        later.append((cell, b.run_cell(cell, b.clients, True)))
    # The slow (lock-step) clients last, in the plan's order, as long as the budget lasts.
    for cell, clients in later:
        if clients:
            b.run_cell(cell, clients, False)
    cells = summarize(b)
    targets = check_targets(b, cells)
    meta = {k: getattr(a, k) for k in ("load", "fstype", "dovecot_version", "mbedtls_version",
                                       "runs", "single_over", "bulk_mib", "budget", "work")}
    meta.update({"elapsed": b.elapsed(), "clients": b.clients, "missing": b.missing})
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"started": started, "meta": meta, "calibration": b.calib,
                   "results": b.results,
                   "cells": [{k: v for k, v in c.items() if k != "key"} for c in cells]},
                  f, indent=1, default=str)
    write_plot(b, cells, a.out)
    write_markdown(b, cells, os.path.join(a.out, "RESULTS.md"), started, targets)
    log("wrote %s" % os.path.join(a.out, "RESULTS.md"))
    for line in targets:
        print("target: " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
