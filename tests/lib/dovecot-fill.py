#!/usr/bin/env python3
"""Deliver test messages into a Dovecot user's Maildir, in a fixed order.

usage: dovecot-fill.py [--uid UID --gid GID] [--doveadm CONF --user USER] MAILDIR SRCDIR

Each regular file in SRCDIR (sorted by name, hidden files skipped) is one message, stored
byte for byte (LF line ends are what Dovecot expects on disk; it sends CRLF over POP3).

Default mode writes MAILDIR/tmp/NAME then renames it into MAILDIR/new/, as an MTA would.
Dovecot gives new files their UIDs sorted by the number before the first '.' of the file
name (maildir_time_cmp in maildir-uidlist.c; qsort, so equal numbers come out in no fixed
order). So every message gets its own number, base+i, and an increasing mtime too: POP3 then
lists the messages in SRCDIR's name order. Files are chowned to UID:GID when given (the
mail processes of a root-run Dovecot are not root).

--doveadm mode runs `doveadm -c CONF save -u USER` once per message instead (slower, needs
the server's auth process running); Dovecot then assigns UIDs itself, in call order.
"""

import argparse
import os
import socket
import subprocess
import sys
import time


def messages(srcdir):
    names = sorted(n for n in os.listdir(srcdir) if not n.startswith("."))
    return [os.path.join(srcdir, n) for n in names if os.path.isfile(os.path.join(srcdir, n))]


def fill_direct(maildir, files, uid, gid):
    for sub in ("new", "cur", "tmp"):
        d = os.path.join(maildir, sub)
        os.makedirs(d, mode=0o700, exist_ok=True)
        if uid is not None:
            os.chown(d, uid, gid)
    if uid is not None:
        os.chown(maildir, uid, gid)
    host = socket.gethostname().replace("/", "_").replace(":", "_") or "localhost"
    # One second per message, ending before now when possible, and always after every file
    # already there: a second fill before Dovecot has synced the first must sort after it.
    base = int(time.time()) - len(files) - 1
    for sub in ("new", "cur"):
        for n in os.listdir(os.path.join(maildir, sub)):
            digits = n[:len(n) - len(n.lstrip("0123456789"))]
            if digits:
                base = max(base, int(digits) + 1)
    pid = os.getpid()
    for i, path in enumerate(files):
        with open(path, "rb") as f:
            data = f.read()
        t = base + i
        name = "%d.M%06dP%d.%s" % (t, i, pid, host)
        tmp = os.path.join(maildir, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.utime(tmp, (t, t))
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.rename(tmp, os.path.join(maildir, "new", name))


def fill_doveadm(conf, user, files):
    for path in files:
        with open(path, "rb") as f:
            r = subprocess.run([os.environ.get("DOVEADM_BIN", "doveadm"), "-c", conf, "save", "-u", user], stdin=f,
                               timeout=60)
        if r.returncode != 0:
            sys.exit("dovecot-fill: doveadm save failed for %s (status %d)"
                     % (path, r.returncode))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uid", type=int)
    ap.add_argument("--gid", type=int)
    ap.add_argument("--doveadm", metavar="CONF")
    ap.add_argument("--user", default="test")
    ap.add_argument("maildir")
    ap.add_argument("srcdir")
    a = ap.parse_args()
    if (a.uid is None) != (a.gid is None):
        ap.error("--uid and --gid go together")
    if a.uid is not None and os.geteuid() != 0:
        # Not root: files are ours already; chown would fail unless it is a no-op.
        if a.uid != os.geteuid():
            ap.error("--uid other than ours needs root")
        a.uid = a.gid = None
    files = messages(a.srcdir)
    if a.doveadm:
        fill_doveadm(a.doveadm, a.user, files)
    else:
        fill_direct(a.maildir, files, a.uid, a.gid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
