#!/usr/bin/env python3
"""verify -- the exactly-once checks of the torture tests (Python 3 standard library only).

usage:
  verify.py gen OUTDIR N [--seed S] [--start K] [--min BYTES] [--max BYTES]
      N deterministic --varied genmail messages (0001.eml ...), but every message stays
      small: genmail's "large" kind (k mod 17 == 5) is replaced by a plain message, and the
      target size of message k is spread over [--min, --max] (default 1024..4096).
  verify.py check ORIG MAILDIR [--server DIR] [--state FILE] [--allow-dups N] [--what TEXT]
      The invariant: the multiset of the files in MAILDIR/new and MAILDIR/cur equals the set
      of files in ORIG, byte for byte (every original delivered exactly once: nothing missing,
      no duplicate, nothing else); MAILDIR/tmp is empty; every name in new/ and cur/ ends in
      ",S=<its size>" (before any ":2," info). With --server DIR: DIR (fakepop3d's --maildir)
      holds no message any more. With --state FILE: the journal is well formed (header, every
      line's CRC-32 right) and every D record names a file that is in new/ or cur/.
      --allow-dups N: up to N duplicates are tolerated (reported, not failed), for the cases
      where the spec allows them; nothing missing is ever tolerated.
      Exit 0 when it holds, 1 with one line per problem on stderr.
  verify.py lost ORIG MAILDIR SERVERDIR [--what TEXT]
      The weaker invariant for a run that did not finish: each original is still on the
      server or delivered; every delivered file is an original; no partial file in new/.
  verify.py deleted ORIG MAILDIR RECORD
      Every message a fakepop3d session (RECORD, JSON lines; sha1 UIDs) deleted is an original
      that is delivered in MAILDIR: nothing unsaved was ever deleted.
  verify.py same ORIG REFDIR
      ORIG's files and REFDIR's (what popref.py received) are the same multiset of bytes:
      checks the assumption that a delivered file is byte-identical to its original.
  verify.py offsets TOTAL RECORD N
      N byte offsets for --drop-after-bytes spread over [0, TOTAL], using RECORD (the JSON
      record of a clean session) for the interesting places; one per line.
  verify.py journal STATE
      Prints the journal's records as "<type> <uid> <name>" lines (CRC checked; bad lines
      as "BAD <lineno>").
  verify.py order STRACE_LOG STATE MAILDIR ORIG
      Checks the durability order in an `strace -f -tt -s 4096` log of one `pop3 dl` run
      against fakepop3d (sha1 UIDs) serving ORIG's files (see torture-order.sh): for each
      message fsync(tmp file) < rename into new/ < its D record written to the journal <
      "DELE n" written to the socket; before QUIT: fsync(new/) < B line < fsync(journal) <
      "QUIT" written to the socket.
"""

import argparse
import collections
import hashlib
import json
import os
import re
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def read_files(*dirs):
    """[(name, bytes)] of the regular files directly in dirs (missing dirs count as empty)."""
    out = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for n in sorted(os.listdir(d)):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    out.append((n, f.read()))
    return out


def server_files(d):
    return [(n, b) for n, b in read_files(d) if not n.startswith(".")]


def desc(b):
    return "%d bytes, sha1 %s, %r" % (len(b), hashlib.sha1(b).hexdigest()[:12], b[:50])


# ---- gen --------------------------------------------------------------------------------------

def cmd_gen(a):
    import genmail
    os.makedirs(a.outdir, exist_ok=True)
    width = max(4, len(str(a.start + a.n - 1)))
    span = max(1, a.max - a.min)
    seen = set()
    for k in range(a.start, a.start + a.n):
        size = a.min + (k * 7919) % span
        kind = genmail.kind_of(k, True, False)
        data = genmail.message(k, size, a.seed, varied=(kind != "large"))
        if isinstance(data, str):
            data = data.encode()
        if data in seen:
            print("verify.py gen: message %d is not unique" % k, file=sys.stderr)
            return 1
        seen.add(data)
        with open(os.path.join(a.outdir, "%0*d.eml" % (width, k)), "wb") as f:
            f.write(data)
    return 0


# ---- journal ----------------------------------------------------------------------------------

def parse_journal(path):
    """(records, bad): records = [(lineno, fields)], bad = [(lineno, reason)]."""
    with open(path, "rb") as f:
        data = f.read()
    recs, bad = [], []
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    if not torn:
        lines.pop()
    for i, line in enumerate(lines, 1):
        if i == 1:
            if line != b"pop3sync-state 1":
                bad.append((i, "first line is not the header: %r" % line[:80]))
            continue
        if torn and i == len(lines):
            bad.append((i, "last line has no newline: %r" % line[:80]))
            continue
        m = re.match(rb"^(.*) \*([0-9a-f]{8})$", line)
        if not m:
            bad.append((i, "no CRC: %r" % line[:80]))
            continue
        if "%08x" % (zlib.crc32(m.group(1)) & 0xFFFFFFFF) != m.group(2).decode():
            bad.append((i, "CRC mismatch: %r" % line[:80]))
            continue
        fields = m.group(1).decode("latin-1").split(" ")
        if fields[0] not in ("D", "A", "L", "B", "F", "R"):
            bad.append((i, "unknown record type: %r" % line[:80]))
            continue
        recs.append((i, fields))
    return recs, bad


def cmd_journal(a):
    recs, bad = parse_journal(a.state)
    for i, f in recs:
        if f[0] == "D":
            print("D %s %s" % (f[2], f[4]))
        elif f[0] == "A":
            print("A %s %s" % (f[2], f[4]))
        else:
            print(f[0])
    for i, why in bad:
        print("BAD %d %s" % (i, why))
    return 0


# ---- check ------------------------------------------------------------------------------------

def base_name(n):
    return n.split(":", 1)[0]


def cmd_check(a):
    what = a.what or "check"
    err = []
    note = []
    originals = read_files(a.orig)
    if not originals:
        err.append("no originals in %s" % a.orig)
    orig_count = collections.Counter(b for _, b in originals)
    for b, c in orig_count.items():
        if c > 1:
            err.append("the originals are not distinct (%s)" % desc(b))
    name_of = {b: n for n, b in originals}
    new = read_files(os.path.join(a.maildir, "new"))
    cur = read_files(os.path.join(a.maildir, "cur"))
    delivered = new + cur
    got = collections.Counter(b for _, b in delivered)
    for n, b in delivered:
        m = re.search(r",S=(\d+)$", base_name(n))
        if not m:
            err.append("delivered file %s has no ,S=<size>" % n)
        elif int(m.group(1)) != len(b):
            err.append("delivered file %s is partial or padded: %d bytes" % (n, len(b)))
        if b not in orig_count:
            err.append("delivered file %s is no original (%s)" % (n, desc(b)))
    dups = 0
    for b, c in got.items():
        if b in orig_count and c > 1:
            dups += c - 1
            names = [n for n, x in delivered if x == b]
            (note if dups <= a.allow_dups else err).append(
                "original %s delivered %d times: %s" % (name_of[b], c, " ".join(names)))
    missing = [n for n, b in originals if b not in got]
    if missing:
        err.append("%d originals not delivered: %s" % (len(missing), " ".join(missing[:10])))
    tmp = os.path.join(a.maildir, "tmp")
    if os.path.isdir(tmp) and os.listdir(tmp):
        err.append("tmp/ is not empty: %s" % " ".join(sorted(os.listdir(tmp))[:5]))
    if not os.path.isdir(os.path.join(a.maildir, "new")):
        err.append("%s/new does not exist" % a.maildir)
    if a.server is not None:
        left = server_files(a.server)
        if left:
            err.append("%d messages still on the server: %s"
                       % (len(left), " ".join(n for n, _ in left[:10])))
    if a.state is not None:
        if not os.path.exists(a.state):
            err.append("state file %s does not exist" % a.state)
        else:
            recs, bad = parse_journal(a.state)
            for i, why in bad:
                err.append("state line %d: %s" % (i, why))
            names = set(base_name(n) for n, _ in delivered)
            # A record retired later (R: the server deleted the message) no
            # longer claims anything.
            retired = {}
            for i, f in recs:
                if f[0] == "R" and len(f) >= 3:
                    retired[(f[1], f[2])] = i
            for i, f in recs:
                if f[0] == "D" and retired.get((f[1], f[2]), 0) > i:
                    continue
                if f[0] == "D" and len(f) >= 6 and f[4] not in names:
                    err.append("state line %d: D record for UID %s names %s, which is in "
                               "neither new/ nor cur/" % (i, f[2], f[4]))
    for e in note:
        print("%s: note: %s" % (what, e), file=sys.stderr)
    for e in err[:15]:
        print("%s: %s" % (what, e), file=sys.stderr)
    if len(err) > 15:
        print("%s: ... and %d more problems" % (what, len(err) - 15), file=sys.stderr)
    return 1 if err else 0


def cmd_lost(a):
    what = a.what or "lost"
    err = []
    originals = read_files(a.orig)
    orig = set(b for _, b in originals)
    on_server = set(b for _, b in server_files(a.server))
    delivered = read_files(os.path.join(a.maildir, "new"), os.path.join(a.maildir, "cur"))
    have = set(b for _, b in delivered)
    for n, b in delivered:
        if b not in orig:
            err.append("delivered file %s is no original (%s)" % (n, desc(b)))
        m = re.search(r",S=(\d+)$", base_name(n))
        if m and int(m.group(1)) != len(b):
            err.append("delivered file %s is partial: %d bytes" % (n, len(b)))
    for n, b in originals:
        if b not in on_server and b not in have:
            err.append("original %s is neither on the server nor delivered: LOST" % n)
    for e in err[:15]:
        print("%s: %s" % (what, e), file=sys.stderr)
    return 1 if err else 0


def cmd_deleted(a):
    by_uid = {hashlib.sha1(b).hexdigest()[:20]: (n, b) for n, b in read_files(a.orig)}
    have = set(b for _, b in read_files(os.path.join(a.maildir, "new"),
                                        os.path.join(a.maildir, "cur")))
    err = []
    for line in open(a.record):
        if not line.strip():
            continue
        r = json.loads(line)
        for uid in r["deleted_uids"]:
            x = by_uid.get(uid)
            if x is None:
                err.append("session %d deleted UID %s, no original" % (r["session"], uid))
            elif x[1] not in have:
                err.append("session %d deleted %s (UID %s), which is not delivered: LOST"
                           % (r["session"], x[0], uid))
    for e in err:
        print("deleted: %s" % e, file=sys.stderr)
    return 1 if err else 0


def cmd_same(a):
    o = collections.Counter(b for _, b in read_files(a.orig))
    r = collections.Counter(b for _, b in read_files(a.ref))
    if o == r:
        return 0
    for b in (o - r):
        print("same: original not received as is: %s" % desc(b), file=sys.stderr)
    for b in (r - o):
        print("same: received but no original: %s" % desc(b), file=sys.stderr)
    return 1


# ---- offsets ----------------------------------------------------------------------------------

def cmd_offsets(a):
    total = a.total
    n = a.n
    rec = json.loads(open(a.record).readline())
    pts = set()
    # Greeting, CAPA, USER/PASS replies: the first ~200 bytes.
    for k in (0, 1, 5, 20, 40, 60, 90, 120, 160, 200):
        pts.add(min(k, total))
    # Just before and after QUIT's reply ("+OK ...\r\n" is the last reply), and among the
    # DELE replies near the end.
    for k in (1, 2, 5, 10, 20, 40, 80, 150, 300, 600, 1200):
        if total - k > 0:
            pts.add(total - k)
    pts.add(total)
    pts.add(total + 1)  # never reached: the clean session must still work
    # The rest spread evenly (mid-RETR, between replies), deterministic.
    rest = n - len(pts)
    for i in range(1, rest + 1):
        pts.add(200 + (total - 1400) * i // (rest + 1) + (i * 37) % 61)
    out = sorted(pts)
    while len(out) > n:
        out.pop(len(out) // 2)
    print("\n".join(str(x) for x in out))
    return 0


# ---- order (strace) ---------------------------------------------------------------------------

LINE_RE = re.compile(r"^(\d+)\s+(\d+:\d+:\d+\.\d+)\s+(.*)$")


def unescape(s):
    """strace's C-escaped string to bytes."""
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            simple = {"n": 10, "r": 13, "t": 9, "\\": 92, '"': 34, "v": 11, "f": 12, "a": 7,
                      "b": 8, "e": 27}
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
            if n == "x":
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            if n.isdigit():
                j = i + 1
                while j < len(s) and j < i + 4 and s[j] in "01234567":
                    j += 1
                out.append(int(s[i + 1:j], 8) & 0xFF)
                i = j
                continue
        out += c.encode("latin-1", "replace")
        i += 1
    return bytes(out)


def cmd_order(a):
    """Assert the per-message and pre-QUIT durability order in an strace log."""
    state = os.path.abspath(a.state)
    maildir = os.path.abspath(a.maildir)
    newdir = os.path.join(maildir, "new")
    # Message number -> UID as fakepop3d (sha1 mode) gives them: the originals in name order.
    num_of = {}
    for i, (n, b) in enumerate(read_files(a.orig), 1):
        num_of[hashlib.sha1(b).hexdigest()[:20]] = i
    # Each call as (start, end, text): an interrupted call ("<unfinished ...>" ... "<...
    # resumed>") starts at its first line and ends at its second. "A before B" below means
    # A ended before B started.
    pending = {}  # pid -> (line number, first half)
    calls = []
    for no, line in enumerate(open(a.log, encoding="latin-1").read().splitlines(), 1):
        m = LINE_RE.match(line)
        if not m:
            continue
        pid, ts, rest = m.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (no, rest[:-len("<unfinished ...>")].rstrip())
            continue
        r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
        if r:
            start, head = pending.pop(pid, (no, ""))
            calls.append((start, no, head + r.group(1)))
        else:
            calls.append((no, no, rest))
    # The fd table changes when a call that makes an fd returns, and when a close starts (the
    # kernel frees the number before close returns): with threads, an openat that started
    # before a close of the same number may return it after, so replay in those moments.
    def replay_key(call):
        start, end, text = call
        return end if re.match(r"^(openat|open|socket|accept4?|dup[23]?)\(", text) else start
    calls.sort(key=replay_key)
    # One process (its threads share the fd table): fd -> (path or "<socket>", is_dir).
    fds = {}
    events = []  # (seq, kind, ...)
    errs = []
    qstr = r'"((?:[^"\\]|\\.)*)"'

    def resolve(dirarg, path):
        # openat/renameat2/linkat name files relative to a directory fd (the Maildir's
        # tmp/ new/ cur/, the state's directory): resolve through the fds seen so far.
        if dirarg and dirarg.isdigit() and not path.startswith("/") and int(dirarg) in fds:
            path = os.path.join(fds[int(dirarg)][0], path)
        return os.path.normpath(path)

    for seq, end, rest in calls:
        m = re.match(r'^openat\((\w+), ' + qstr + r', ([^)]*)\)\s*=\s*(-?\d+)', rest)
        if m:
            fd = int(m.group(4))
            if fd >= 0:
                path = unescape(m.group(2)).decode("latin-1")
                fds[fd] = (resolve(m.group(1), path), "O_DIRECTORY" in m.group(3))
            continue
        m = re.match(r'^socket\(.*\)\s*=\s*(\d+)', rest)
        if m:
            fds[int(m.group(1))] = ("<socket>", False)
            continue
        m = re.match(r'^close\((\d+)\)', rest)
        if m:
            fds.pop(int(m.group(1)), None)
            continue
        m = re.match(r"^(fsync|fdatasync)\((\d+)\)\s*=\s*0", rest)
        if m:
            path, isdir = fds.get(int(m.group(2)), (None, False))
            events.append((end, "fsync", path, isdir, seq))
            continue
        m = re.match(r'^(rename|renameat|renameat2|link|linkat)\((.*)\)\s*=\s*0\b', rest)
        if m:
            paths = [resolve(d, unescape(x).decode("latin-1"))
                     for d, x in re.findall(r'(?:^|, )(?:(\w+), )?' + qstr, m.group(2))]
            if len(paths) >= 2:
                events.append((seq, "rename", paths[0], paths[1], end))
            continue
        m = re.match(r'^(write|writev|sendmsg|sendto)\((\d+), (.*)\)\s*=\s*(\d+)', rest)
        if m:
            fd = int(m.group(2))
            data = b"".join(unescape(x) for x in re.findall(qstr, m.group(3)))
            path, isdir = fds.get(fd, (None, False))
            events.append((seq, "write", fd, path, data, end))
            continue

    def first(pred):
        for ev in events:
            if pred(ev):
                return ev[0]
        return None

    renames = {}
    for ev in events:
        if ev[1] == "rename" and os.path.dirname(ev[3]) == newdir:
            renames[os.path.basename(ev[3])] = (ev[0], ev[4], ev[2])
    jw = [ev for ev in events if ev[1] == "write" and ev[3] == state]
    sock = [ev for ev in events if ev[1] == "write" and ev[3] == "<socket>"]
    if not sock:
        errs.append("no write to a socket found")
    drecs = {}  # num -> (seq, name)
    for ev in jw:
        for line in ev[4].split(b"\n"):
            if line.startswith(b"D "):
                f = line.decode("latin-1").split(" ")
                num = num_of.get(f[2])
                if num is None:
                    errs.append("D record for an unknown UID %s" % f[2])
                else:
                    drecs.setdefault(num, []).append((ev[0], ev[5], f[4]))
    deles = {}
    for ev in sock:
        for m in re.finditer(rb"DELE (\d+)\r\n", ev[4]):
            deles.setdefault(int(m.group(1)), ev[0])
    for num in range(1, len(num_of) + 1):
        if num not in drecs:
            errs.append("message %d: no D record written to %s" % (num, state))
            continue
        name = drecs[num][0][2]
        r = renames.get(name)
        if r is None:
            errs.append("message %d: no rename into new/%s seen" % (num, name))
            continue
        rseq, rend, tmp_path = r
        # The record that counts is the one appended after the rename (an earlier copy,
        # written before the rename as an intent, is allowed).
        after = [d for d in drecs[num] if d[0] > rend]
        dseq, dend = (after[0][0], after[0][1]) if after else (drecs[num][0][0],
                                                                 drecs[num][0][1])
        fs = [ev[0] for ev in events if ev[1] == "fsync" and ev[2] == tmp_path]
        ds = deles.get(num)
        intent = [d[0] for d in drecs[num] if d[1] < rseq]
        print("message %d: fsync #%s < %srename #%d < record #%d < DELE #%s"
              % (num, min(fs) if fs else "-", "intent #%d < " % intent[0] if intent else "",
                 rseq, dseq, ds))
        if not fs:
            errs.append("message %d (%s): its tmp file was never fsynced" % (num, tmp_path))
        elif not min(fs) < rseq:
            errs.append("message %d: fsync of the tmp file after the rename" % num)
        if not after:
            errs.append("message %d: no D record after the rename (#%d); first D at #%d"
                        % (num, rseq, dseq))
        if ds is None:
            errs.append("message %d: no DELE %d sent" % (num, num))
        elif not dend < ds:
            errs.append("message %d: DELE (#%d) before its D record (#%d)" % (num, ds, dseq))
    quit_seq = first(lambda ev: ev[1] == "write" and ev[3] == "<socket>" and b"QUIT\r\n" in ev[4])
    bseq = first(lambda ev: ev[1] == "write" and ev[3] == state and
                 re.search(rb"(^|\n)B \d+ \*", ev[4]) is not None)
    if quit_seq is None:
        errs.append("no QUIT written to the socket")
    if bseq is None:
        errs.append("no B line written to the journal")
    if quit_seq and bseq:
        bend = [ev[5] for ev in events if ev[0] == bseq][0]
        newsync = [ev[0] for ev in events if ev[1] == "fsync" and ev[2] == newdir and ev[3]
                   and ev[0] < bseq]
        jsync = [ev[0] for ev in events if ev[1] == "fsync" and ev[2] == state and ev[4] > bend]
        last_rename = max((r[1] for r in renames.values()), default=0)
        print("before QUIT: fsync(new/) #%s < B #%d < fsync(journal) #%s < QUIT #%d"
              % (max(newsync) if newsync else "-", bseq, min(jsync) if jsync else "-",
                 quit_seq))
        if not newsync:
            errs.append("no fsync of %s (O_DIRECTORY) before the B line" % newdir)
        elif max(ev[4] for ev in events if ev[0] == max(newsync) and ev[1] == "fsync") \
                < last_rename:
            errs.append("new/ fsynced only before the last rename into it")
        if not jsync:
            errs.append("no fsync of the journal after the B line")
        elif not min(jsync) < quit_seq:
            errs.append("journal fsync (#%d) after QUIT (#%d)" % (min(jsync), quit_seq))
        if not bseq < quit_seq:
            errs.append("B line (#%d) after QUIT (#%d)" % (bseq, quit_seq))
        if bseq < max((d[1] for x in drecs.values() for d in x), default=0):
            errs.append("B line before the last D record")
        if deles and max(deles.values()) > quit_seq:
            errs.append("a DELE after QUIT")
    for e in errs:
        print("order: %s" % e, file=sys.stderr)
    return 1 if errs else 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="verify.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("outdir")
    g.add_argument("n", type=int)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--start", type=int, default=1)
    g.add_argument("--min", type=int, default=1024)
    g.add_argument("--max", type=int, default=4096)
    c = sub.add_parser("check")
    c.add_argument("orig")
    c.add_argument("maildir")
    c.add_argument("--server")
    c.add_argument("--state")
    c.add_argument("--allow-dups", type=int, default=0)
    c.add_argument("--what")
    lo = sub.add_parser("lost")
    lo.add_argument("orig")
    lo.add_argument("maildir")
    lo.add_argument("server")
    lo.add_argument("--what")
    dl = sub.add_parser("deleted")
    dl.add_argument("orig")
    dl.add_argument("maildir")
    dl.add_argument("record")
    s = sub.add_parser("same")
    s.add_argument("orig")
    s.add_argument("ref")
    o = sub.add_parser("offsets")
    o.add_argument("total", type=int)
    o.add_argument("record")
    o.add_argument("n", type=int)
    j = sub.add_parser("journal")
    j.add_argument("state")
    r = sub.add_parser("order")
    r.add_argument("log")
    r.add_argument("state")
    r.add_argument("maildir")
    r.add_argument("orig")
    a = p.parse_args(argv)
    return {"gen": cmd_gen, "check": cmd_check, "lost": cmd_lost, "same": cmd_same,
            "deleted": cmd_deleted, "offsets": cmd_offsets, "journal": cmd_journal,
            "order": cmd_order}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
