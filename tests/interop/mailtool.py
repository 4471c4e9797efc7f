#!/usr/bin/env python3
"""mailtool -- put test mail into real POP3 servers and look at what they hold (make interop).

usage:
  mailtool.py pick SRC OUT [--no-from-lines] [--ascii-headers]
      copy the message files of SRC (sorted by name) to OUT, leaving out those a server
      cannot store as they are: --no-from-lines drops messages with a body line starting
      with "From " (an mbox splits them), --ascii-headers drops messages with 8-bit bytes
      in the header (Courier wraps them for clients that do not send UTF8), --message-id
      drops messages without a Message-ID (popa3d gives all of those one UID, and the
      reference client names its files by UID)
  mailtool.py mbox FILE MSG...        append each MSG to the mbox FILE (a "From " line
                                      before it, a blank line after it)
  mailtool.py maildir DIR MSG...      write each MSG into DIR/new/ (mode 0600)
  mailtool.py lmtp SOCKET RCPT MSG... deliver each MSG over LMTP (a Unix socket) to RCPT
  mailtool.py stat HOST PORT USER PASS     print the number of messages (STAT)
  mailtool.py uidl HOST PORT USER PASS     print the UIDs of the listing, one a line
  mailtool.py drain HOST PORT USER PASS    DELE every message, then QUIT
  mailtool.py compare REF MAILDIR     the files of REF and those of MAILDIR/new and
                                      MAILDIR/cur are the same multiset of byte strings;
                                      prints what differs, exit 1 if anything does
  mailtool.py twins OUT NAME BODY1 BODY2
      write OUT/NAME-1.eml and OUT/NAME-2.eml: the same header block (From, To, Subject,
      Date, Message-ID), bodies BODY1 and BODY2 (which should have the same length)
Message files use LF line ends; LMTP gets CRLF. Exit status 0 on success, 1 on error.
"""

import os
import poplib
import smtplib
import sys
import time

poplib._MAXLINE = 1 << 24


def read(path):
    with open(path, "rb") as f:
        return f.read()


def files(d):
    return [os.path.join(d, n) for n in sorted(os.listdir(d))
            if os.path.isfile(os.path.join(d, n))]


def header_block(msg):
    end = msg.find(b"\n\n")
    return msg if end < 0 else msg[:end + 1]


def cmd_pick(args):
    src, out = args[0], args[1]
    no_from = "--no-from-lines" in args[2:]
    ascii_hdr = "--ascii-headers" in args[2:]
    need_id = "--message-id" in args[2:]
    os.makedirs(out, exist_ok=True)
    n = 0
    for p in files(src):
        m = read(p)
        if no_from and (m.startswith(b"From ") or b"\nFrom " in m):
            continue
        if ascii_hdr and any(c >= 0x80 for c in header_block(m)):
            continue
        if need_id and not any(l.lower().startswith(b"message-id:")
                               for l in header_block(m).split(b"\n")):
            continue
        with open(os.path.join(out, os.path.basename(p)), "wb") as f:
            f.write(m)
        n += 1
    print(n)


def cmd_mbox(args):
    with open(args[0], "ab") as f:
        for p in args[1:]:
            m = read(p)
            if not m.endswith(b"\n"):
                m += b"\n"
            # A header block without a body: the blank line after it would be taken for
            # the end of the header, and the next "From " line would not follow a blank line.
            if b"\n\n" not in m:
                m += b"\n"
            f.write(b"From pop3sync-interop@localhost Thu Jan  1 00:00:00 2026\n" + m + b"\n")


def cmd_maildir(args):
    d = args[0]
    for i, p in enumerate(args[1:]):
        name = "%d.M%dP%dQ%d.pop3sync-interop" % (time.time(), time.time_ns() % 1000000,
                                                    os.getpid(), i)
        tmp = os.path.join(d, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(read(p))
        os.rename(tmp, os.path.join(d, "new", name))


def cmd_lmtp(args):
    sock, rcpt = args[0], args[1]
    conn = smtplib.LMTP(sock)
    try:
        for p in args[2:]:
            m = read(p).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            refused = conn.sendmail("pop3sync-interop@localhost", [rcpt], m)
            if refused:
                raise RuntimeError("LMTP refused %s: %r" % (p, refused))
    finally:
        conn.quit()


def login(args):
    conn = poplib.POP3(args[0], int(args[1]), timeout=30)
    conn.user(args[2])
    conn.pass_(args[3])
    return conn


def cmd_stat(args):
    conn = login(args)
    count, _ = conn.stat()
    conn.quit()
    print(count)


def cmd_uidl(args):
    conn = login(args)
    _, lines, _ = conn.uidl()
    conn.quit()
    for line in lines:
        print(line.decode("latin-1").split(None, 1)[1])


def cmd_drain(args):
    conn = login(args)
    count, _ = conn.stat()
    for i in range(1, count + 1):
        conn.dele(i)
    conn.quit()
    print(count)


def cmd_compare(args):
    ref, md = args[0], args[1]
    want = sorted(read(p) for p in files(ref))
    got = sorted(read(p) for d in ("new", "cur") if os.path.isdir(os.path.join(md, d))
                 for p in files(os.path.join(md, d)))
    missing = list(want)
    extra = []
    for m in got:
        if m in missing:
            missing.remove(m)
        else:
            extra.append(m)
    for m in missing:
        print("missing from the Maildir: %d bytes: %r..." % (len(m), m[:60]))
    for m in extra:
        near = [w for w in want if w[:200] == m[:200]]
        print("not in the reference: %d bytes: %r..." % (len(m), m[:60]))
        if near:
            w = near[0]
            i = next((k for k in range(min(len(w), len(m))) if w[k] != m[k]),
                     min(len(w), len(m)))
            print("  reference has %d bytes; first difference at offset %d: %r vs %r"
                  % (len(w), i, w[i:i + 40], m[i:i + 40]))
    print("%d reference messages, %d delivered, %d missing, %d unexpected"
          % (len(want), len(got), len(missing), len(extra)))
    return 1 if missing or extra else 0


def cmd_twins(args):
    out, name, b1, b2 = args
    os.makedirs(out, exist_ok=True)
    hdr = ("From: Twin Sender <twins@example.org>\n"
           "To: someone@example.org\n"
           "Subject: twins %s\n"
           "Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
           "Message-ID: <%s@twins.example.org>\n\n" % (name, name)).encode()
    for i, body in ((1, b1), (2, b2)):
        with open(os.path.join(out, "%s-%d.eml" % (name, i)), "wb") as f:
            f.write(hdr + body.encode() + b"\n")


def main(argv):
    cmds = {"pick": (cmd_pick, 2), "mbox": (cmd_mbox, 1), "maildir": (cmd_maildir, 1),
            "lmtp": (cmd_lmtp, 2), "stat": (cmd_stat, 4), "drain": (cmd_drain, 4),
            "uidl": (cmd_uidl, 4),
            "compare": (cmd_compare, 2), "twins": (cmd_twins, 4)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 < cmds[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 1
    try:
        return cmds[argv[1]][0](argv[2:]) or 0
    except (OSError, poplib.error_proto, smtplib.SMTPException, RuntimeError) as e:
        print("mailtool %s: %s: %s" % (argv[1], e.__class__.__name__, e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
