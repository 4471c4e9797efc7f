#!/usr/bin/env python3
"""genmail -- write deterministic test messages, one file each.

usage: genmail.py OUTDIR N [--size BYTES] [--seed S] [--varied] [--hostile] [--start K]

Writes N messages to OUTDIR (created if needed) as 0001.eml, 0002.eml, ... (at least four
digits, more when N needs them; --start K numbers from K, for adding messages later). The
bytes depend only on the seed (default 1), the message number, --size and the mode flags:
the same command always writes the same files. Line ends are LF only.

Default: plain ASCII messages of about BYTES (default 2000) with realistic headers
(From/To/Subject/Date/Message-ID, unique per message and seed); some body lines start with
".", so dot-stuffing is exercised.

--varied: a mix for the tests, every message still safe to store in Dovecot (no NUL, no
CR, a final LF, first line not starting with "."). Message k gets kind k mod 12:
  plain, dots (lines ".", "..", "...", ".x", "..x", " .", last body line "."), latin1 (raw
  ISO-8859-1 bytes in Subject and body), utf8 (raw UTF-8 bytes), longlines (998 to 2000
  characters), emptylines (blank lines at the start, middle and end of the body), folded
  (multi-line folded headers), headersonly (no body, no blank line), tiny, mime (multipart
  with a base64 part), fromlines ("From " / ">From " lines, trailing spaces, tabs),
  dotheavy (every line starts with ".").
  Every message number k with k mod 17 == 5 is instead a large one (100 to 300 KiB).
--hostile (implies --varied): adds kinds only the fake server can carry, taking turns with
  the others (k mod 19): empty (0 bytes), dotfirst (first line ".x"), dotonly (the message
  is ".\\n"), nofinalnl (no LF at the end), nul (NUL bytes), barecr (CR inside lines and
  before LF), crlf (CRLF line ends throughout).

Usable as a module: generate(outdir, n, size=2000, seed=1, varied=False, hostile=False,
start=1) returns the list of paths written; message(k, ...) returns one message's bytes.
"""

import argparse
import base64
import hashlib
import os
import random
import sys

VARIED_KINDS = ("plain", "dots", "latin1", "utf8", "longlines", "emptylines", "folded",
                "headersonly", "tiny", "mime", "fromlines", "dotheavy")
HOSTILE_KINDS = ("empty", "dotfirst", "dotonly", "nofinalnl", "nul", "barecr", "crlf")

WORDS = ("the quick brown fox jumps over lazy dog mail server client octet message line "
         "pipeline maildir deliver retrieve delete update state session transaction "
         "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda").split()
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()


def kind_of(k, varied, hostile):
    if not varied and not hostile:
        return "plain"
    if hostile:
        kinds = VARIED_KINDS + HOSTILE_KINDS
        kind = kinds[k % len(kinds)]
        if kind in HOSTILE_KINDS:
            return kind
    if k % 17 == 5:
        return "large"
    return VARIED_KINDS[k % len(VARIED_KINDS)]


def sentence(rng, nwords=None):
    n = nwords or rng.randint(4, 14)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def headers(rng, k, seed, kind, extra=()):
    tag = hashlib.sha1(b"genmail %d %d" % (seed, k)).hexdigest()[:12]
    day = rng.randint(1, 28)
    h = [
        "Return-Path: <sender%d@example.org>" % (k % 13),
        "Received: from mx%d.example.org (mx%d.example.org [192.0.2.%d])" % (k % 3, k % 3,
                                                                            1 + k % 250),
        "\tby mail.example.net with ESMTP id %s" % tag.upper(),
        "\tfor <test@example.net>; %s, %d %s 2024 %02d:%02d:%02d +0000" % (
            DAYS[day % 7], day, MONTHS[k % 12], rng.randint(0, 23), rng.randint(0, 59),
            rng.randint(0, 59)),
        "From: Sender %d <sender%d@example.org>" % (k % 13, k % 13),
        "To: Test User <test@example.net>",
        "Subject: test %d (%s) %s" % (k, kind, sentence(rng, 3)),
        "Date: %s, %d %s 2024 %02d:%02d:00 +0000" % (DAYS[day % 7], day, MONTHS[k % 12],
                                                    rng.randint(0, 23), rng.randint(0, 59)),
        "Message-ID: <%s.%d.%d@genmail.example.org>" % (tag, seed, k),
        "MIME-Version: 1.0",
    ]
    h.extend(extra)
    if not any(x.startswith("Content-Type:") for x in extra):
        h.append("Content-Type: text/plain; charset=us-ascii")
    return "\n".join(h) + "\n"


def filler(rng, target, dot_every=6):
    """ASCII body lines of roughly target bytes; every dot_every-th line starts with "."."""
    out = []
    total = 0
    n = 0
    while total < target or n < 2:
        n += 1
        line = sentence(rng)
        if dot_every and n % dot_every == 0:
            line = "." + line
        out.append(line)
        total += len(line) + 1
    return "\n".join(out) + "\n"


def message(k, size=2000, seed=1, varied=False, hostile=False):
    """The bytes of message number k."""
    kind = kind_of(k, varied, hostile)
    rng = random.Random("genmail:%d:%d:%d:%s" % (seed, k, size, kind))
    ascii_head = headers(rng, k, seed, kind)
    body_target = max(0, size - len(ascii_head))

    if kind == "plain":
        return (ascii_head + "\n" + filler(rng, body_target)).encode()
    if kind == "dots":
        lines = [".", "..", "...", ".x", "..x", "...x", " .", ". ", ".\t", "a.", "", "."]
        body = "\n".join(lines) + "\n" + filler(rng, body_target, 3) + ".\n"
        return (ascii_head + "\n" + body).encode()
    if kind == "latin1":
        head = headers(rng, k, seed, kind, ["Content-Type: text/plain; charset=iso-8859-1",
                                            "Content-Transfer-Encoding: 8bit"])
        head = head.replace("Subject: ", "Subject: caf\u00e9 \u00fcber \u00e6\u00f8\u00e5 ")
        body = ("Gr\u00fc\u00dfe aus K\u00f6ln, \u00e0 bient\u00f4t, se\u00f1or!\n"
                "\u00a9 \u00ae \u00b0 \u00b1 \u00bd \u00bf \u00ff\n" + filler(rng, body_target))
        return (head + "\n" + body).encode("latin-1")
    if kind == "utf8":
        head = headers(rng, k, seed, kind, ["Content-Type: text/plain; charset=utf-8",
                                            "Content-Transfer-Encoding: 8bit"])
        head = head.replace("Subject: ", "Subject: \u65e5\u672c\u8a9e \u0440\u0443\u0441 ")
        body = ("\u041f\u0440\u0438\u0432\u0435\u0442, \u4e16\u754c! \u00e9\u00e8 "
                "\U0001F600 \u2603\n"
                ".\u00e9 line starting with a dot\n" + filler(rng, body_target))
        return (head + "\n" + body).encode("utf-8")
    if kind == "longlines":
        lens = (998, 999, 1000, 1001, 1500, 2000)
        body = "".join(("x%d:" % n + "".join(rng.choice("abcdefghij ") for _ in range(n)))[:n]
                       + "\n" for n in lens)
        body += "." + "y" * 1999 + "\n"
        return (ascii_head + "\n" + body + filler(rng, body_target // 4)).encode()
    if kind == "emptylines":
        body = "\n\n" + sentence(rng) + "\n\n\n\n" + filler(rng, body_target) + "\n\n\n"
        return (ascii_head + "\n" + body).encode()
    if kind == "folded":
        extra = [
            "X-Folded: first part of a long header value that goes on\n"
            "\tand continues on a line starting with a tab\n"
            "  and on one starting with two spaces",
            "References: <a.%d@example.org>\n <b.%d@example.org>\n <c.%d@example.org>"
            % (k, k, k),
            "X-Long-Header: " + " ".join(sentence(rng, 10) for _ in range(6)).replace(
                " ", "\n ", 3),
        ]
        head = headers(rng, k, seed, kind, extra)
        head = head.replace("Subject: ", "Subject: a folded\n subject line\n\twith three parts ")
        return (head + "\n" + filler(rng, body_target)).encode()
    if kind == "headersonly":
        return ascii_head.encode()
    if kind == "tiny":
        return b"Subject: tiny %d\n\nx\n" % k
    if kind == "mime":
        boundary = "=_genmail_%d_%d" % (seed, k)
        head = headers(rng, k, seed, kind,
                       ['Content-Type: multipart/mixed;\n\tboundary="%s"' % boundary])
        blob = bytes(rng.randrange(256) for _ in range(max(600, body_target // 2)))
        b64 = base64.encodebytes(blob).decode()
        body = ("This is a multi-part message in MIME format.\n\n--%s\n"
                "Content-Type: text/plain; charset=us-ascii\n\n%s\n--%s\n"
                "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
                'Content-Disposition: attachment; filename="blob%d.bin"\n\n%s\n--%s--\n'
                % (boundary, filler(rng, 200), boundary, k, b64, boundary))
        return (head + "\n" + body).encode()
    if kind == "fromlines":
        body = ("From the start of a line\n>From an escaped one\n>>From deeper\n"
                "trailing spaces   \ntrailing tab\t\n   \n\t\n" + filler(rng, body_target))
        return (ascii_head + "\n" + body).encode()
    if kind == "dotheavy":
        body = "".join("." * (1 + n % 3) + sentence(rng) + "\n" for n in range(40))
        return (ascii_head + "\n" + body).encode()
    if kind == "large":
        target = rng.randint(100, 300) * 1024
        return (ascii_head + "\n" + filler(rng, target - len(ascii_head), 7)).encode()
    # hostile kinds
    if kind == "empty":
        return b""
    if kind == "dotfirst":
        return (".first line starts with a dot\n" + ascii_head + "\n" + filler(rng, 300)).encode()
    if kind == "dotonly":
        return b".\n"
    if kind == "nofinalnl":
        return (ascii_head + "\n" + filler(rng, 300) + "no newline at the end").encode()
    if kind == "nul":
        return (ascii_head + "\nNUL\0inside\n\0\n" + filler(rng, 300) + "end\0\n").encode()
    if kind == "barecr":
        return (ascii_head + "\nbare\rCR inside\nCR before LF\r\n\r\nCR CR LF\r\r\n\r\n"
                + filler(rng, 300)).encode()
    if kind == "crlf":
        return (ascii_head + "\n" + filler(rng, 500)).replace("\n", "\r\n").encode()
    raise AssertionError(kind)


def generate(outdir, n, size=2000, seed=1, varied=False, hostile=False, start=1):
    os.makedirs(outdir, exist_ok=True)
    width = max(4, len(str(start + n - 1)))
    paths = []
    for k in range(start, start + n):
        data = message(k, size, seed, varied or hostile, hostile)
        if isinstance(data, str):
            data = data.encode()
        path = os.path.join(outdir, "%0*d.eml" % (width, k))
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(prog="genmail.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir")
    p.add_argument("n", type=int)
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--varied", action="store_true")
    p.add_argument("--hostile", action="store_true")
    p.add_argument("--start", type=int, default=1)
    a = p.parse_args(argv)
    if a.n < 0 or a.start < 1 or a.size < 0:
        p.error("N, --size must be >= 0 and --start >= 1")
    generate(a.outdir, a.n, a.size, a.seed, a.varied, a.hostile, a.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
