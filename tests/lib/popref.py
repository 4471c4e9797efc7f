#!/usr/bin/env python3
"""popref -- lock-step reference POP3 client (Python's poplib) for the tests.

usage: popref.py HOST PORT USER PASS OUTDIR [--ssl | --starttls] [--cafile F]
                 [--servername NAME] [--delete] [--timeout SECONDS]

Logs in with USER/PASS, then for each message, one command at a time: RETR it and write
what poplib returns -- the lines after dot-unstuffing, without their CRLF -- joined with
b"\\n" plus a final b"\\n" into OUTDIR/<name>. A message with no lines gives an empty file.
That is exactly what an RFC 1939 client must deliver for the message (wire form
L1 CRLF ... Ln CRLF "." CRLF -> L1 LF ... Ln LF), so the tests compare pop3sync's deliveries
with these files.

<name> is the message's UID when the server answers UIDL, else its message number. In a UID,
"%" becomes "%25", "/" becomes "%2F", and a leading "." becomes "%2E" (UIDs are 0x21-0x7E).
stdout gets one line per message: "<number> <uid or -> <name> <octets written>".

--delete sends DELE after each successful RETR; QUIT is always sent at the end.
--ssl: implicit TLS; --starttls: STLS after the greeting. Without --cafile the certificate is
not verified; with it, the chain is checked against F and the host name against
--servername (default HOST; test certificates are for "localhost").
Exit status: 0 on success, 1 on any error (message on stderr).
"""

import argparse
import os
import poplib
import ssl
import sys

# poplib refuses lines over 2048 octets; test messages have longer ones.
poplib._MAXLINE = 1 << 24


def safe_name(uid):
    s = uid.replace("%", "%25").replace("/", "%2F")
    if s.startswith("."):
        s = "%2E" + s[1:]
    return s


def make_context(args):
    if args.cafile:
        ctx = ssl.create_default_context(cafile=args.cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def main(argv=None):
    p = argparse.ArgumentParser(prog="popref.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("user")
    p.add_argument("password")
    p.add_argument("outdir")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--ssl", action="store_true")
    t.add_argument("--starttls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--servername")
    p.add_argument("--delete", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args(argv)

    try:
        os.makedirs(args.outdir, exist_ok=True)
        if args.ssl or args.starttls:
            ctx = make_context(args)
        if args.ssl:
            SSLRef.servername = args.servername
            conn = SSLRef(args.host, args.port, context=ctx, timeout=args.timeout)
        else:
            conn = poplib.POP3(args.host, args.port, timeout=args.timeout)
            if args.starttls:
                # poplib uses .host as the TLS server name; it was only needed to connect.
                conn.host = args.servername or args.host
                conn.stls(ctx)
        conn.user(args.user)
        conn.pass_(args.password)
        count, _ = conn.stat()
        uids = {}
        try:
            _, lines, _ = conn.uidl()
            for line in lines:
                num, uid = line.decode("latin-1").split(None, 1)
                uids[int(num)] = uid.strip()
        except poplib.error_proto:
            uids = {}
        for num in range(1, count + 1):
            _, lines, _ = conn.retr(num)
            data = b"\n".join(lines) + b"\n" if lines else b""
            uid = uids.get(num)
            name = safe_name(uid) if uid is not None else str(num)
            with open(os.path.join(args.outdir, name), "wb") as f:
                f.write(data)
            print("%d %s %s %d" % (num, uid if uid is not None else "-", name, len(data)))
            if args.delete:
                conn.dele(num)
        conn.quit()
    except (OSError, poplib.error_proto, ssl.SSLError, ValueError) as e:
        print("popref: %s: %s" % (e.__class__.__name__, e), file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


class SSLRef(poplib.POP3_SSL):
    """POP3_SSL that can send and check a server name other than the address it dials."""
    servername = None

    def _create_socket(self, timeout):
        sock = poplib.POP3._create_socket(self, timeout)
        return self.context.wrap_socket(sock, server_hostname=self.servername or self.host)


if __name__ == "__main__":
    sys.exit(main())
