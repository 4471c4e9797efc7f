#!/usr/bin/env python3
"""fakepop3d -- pop3sync's scriptable test POP3 server (Python 3.11 standard library only).

usage: fakepop3d.py [--host ADDR] [--port N] [--maildir DIR | --generate N[:SIZE]]
                    [--user U] [--password P] [--uid-mode sha1|number|msgnum|headers]
                    [--profile dovecot|popa3d|solid|courier|courier-drop|mailutils] [--uid-len KEY=LEN]
                    [--no-capa] [--no-pipelining] [--no-uidl] [--no-top] [--expire0]
                    [--expire0-enforce] [--utf8] [--utf8-rewrite] [--x-uidl] [--grow-at-quit]
                    [--retr-reply octets|follow|plain] [--apop-greeting] [--apop]
                    [--sasl MECH]... [--no-user] [--token T]... [--token-file FILE]
                    [--oauth-fail challenge|err] [--oauth-count-file FILE] [--capa-silent]
                    [--capa-extra LINE] [--implementation TEXT]
                    [--stls CERT KEY | --ssl CERT KEY] [--latency MS]
                    [--max-sessions N] [--lifetime SECONDS] [--record FILE]
                    [--port-file FILE] [--verbose] [fault options, see below]

Shell use:  python3 tests/fakepop3d.py --generate 50 --port-file "$T/port" &
            while [ ! -s "$T/port" ]; do sleep 0.1; done; port=$(cat "$T/port")

Startup: listens on --host (default 127.0.0.1; ::1 works) and --port (default 0, i.e. the
kernel picks one), then prints "PORT <n>" as the first line of stdout and flushes it (and,
with --port-file FILE, also writes "<n>\n" to FILE, atomically by rename). It
serves any number of concurrent sessions until SIGTERM/SIGINT, until --max-sessions N
sessions have ended, or until --lifetime SECONDS (default 600) have passed; exit status 0.

Mailbox
  --maildir DIR     every regular file in DIR whose name does not start with "." is one message,
                    in name order; its bytes are served as they are (LF line ends expected).
                    DIR is re-read at each login, so tests may add files between sessions.
  --generate N[:SIZE]  N deterministic messages of about SIZE bytes (default 2000) with
                    From/To/Subject/Date/Message-ID headers and body lines starting with ".";
                    messages 1, 11, 21, ... also hold a line that is exactly ".".
  Neither option: an empty mailbox.
  Wire form of a message: every LF not preceded by CR becomes CRLF (existing CRLF stays), a
  CRLF is added when the message does not end with a line end (and is counted in its size),
  every line starting with "." gets one more "." (the first line too), then ".\r\n".
  LIST/STAT size = octets of the CRLF form before dot-stuffing; RETR says "+OK <size> octets".
  UIDs (--uid-mode): sha1 (default): the first 20 hex digits of SHA-1 of the message bytes,
  stable across server restarts (byte-identical copies after the first one get SHA-1 of
  name + NUL + content instead); number: "1", "2", ... in first-seen order, stable while this
  process runs; msgnum: the message's number in the current session (unstable on purpose);
  headers: the MD5 (32 hex digits) of the message's Received and Message-ID fields, as
  popa3d and solid-pop3d hash some header lines: a copy that arrives again, or another
  message with the same such fields, has the same UID, also twice in one listing.
  A UID is fixed when the message is first read (it does not change when --grow-at-quit
  adds headers). --uid-len KEY=LEN (repeatable): the message whose --maildir file name (or
  --generate number) is KEY gets a UID of exactly LEN hex digits instead (over-long UIDs).
  Deletion: DELE marks; QUIT in the TRANSACTION state commits (UPDATE state): the messages
  leave this process's mailbox and, with --maildir, their files are unlinked from DIR.
  Without QUIT (disconnect, fault) nothing is deleted. The commit happens when QUIT is
  processed, even if its +OK then never reaches the client (--drop-reply, a client that hung
  up after sending QUIT): the "ambiguous QUIT" case.
  One session at a time holds the maildrop lock: a concurrent login gets "-ERR [IN-USE] ...".
  The lock is held from a successful PASS until the server closes the connection or the
  client goes away (a stalled session keeps it until then).

Profiles (--profile NAME) set defaults for the options below (an option given on the command
line wins); each mirrors what a real server does that matters to a client's UID journal:
  dovecot    nothing (the plain behaviour above)
  popa3d     --uid-mode headers --no-capa --retr-reply plain
  solid      (or solid-pop3d) --uid-mode headers --no-capa --apop-greeting
  courier    (or courier-pop) --utf8-rewrite --retr-reply follow, IMPLEMENTATION Courier
             Mail Server. Courier over STLS that drops the connection at QUIT: add
             --stls CERT KEY --drop-at-quit.
  courier-drop  courier plus --drop-after-login: its login process (pop3login) hands the
             connection to pop3d after PASS, and what the client pipelined behind PASS is lost
  mailutils  --x-uidl --grow-at-quit, CAPA also lists "EXPIRENEVER" (no space),
             IMPLEMENTATION GNU Mailutils 3.15
  --no-top          TOP answers -ERR and is not listed in CAPA
  --retr-reply F    RETR's +OK line: octets "+OK <n> octets" (default), follow
                    "+OK <n> octets follow." (Courier), plain "+OK" (no count)
  --apop-greeting   the greeting carries an APOP timestamp "<pid.time@host>" (APOP is still
                    refused)
  --utf8            CAPA lists "UTF8 USER"; the UTF8 command (RFC 6856; taken before and
                    after login, like Courier) answers +OK and sets the session's utf8 flag
  --utf8-rewrite    implies --utf8. For a session that has not sent UTF8, a message with a
                    byte >= 0x80 in its header block is served by RETR and TOP as a 7-bit
                    "cannot display Unicode content" wrapper with the original attached in
                    base64: LIST and STAT still give the original size, RETR announces the
                    rewritten size ("+OK <n> octets follow." with --retr-reply follow) and
                    sends exactly that; UIDL is unchanged. After UTF8: the original.
  --x-uidl          every message is served (LIST size, RETR, TOP) with an "X-UIDL:" header
                    added at the end of its header block, whose value changes with each
                    session ("<session start time>.<session number>", fixed width)
  --grow-at-quit    at a committed QUIT, every message that stays gets (at the end of its
                    header block) "X-UID: <n>" (n fixed once), "Status: RO" once it has been
                    retrieved, else "Status: O", and the first one "X-IMAPbase: <validity>
                    <next uid>": LIST sizes grow, UIDs stay. Kept in this process's memory
                    (the --maildir files are not rewritten).
  --capa-extra LINE (repeatable) one more CAPA line;  --implementation TEXT  its IMPLEMENTATION

Login: USER/PASS against --user (default "test") and --password (default "secret"); a wrong
  pair gets "-ERR [AUTH] invalid credentials". APOP and AUTH are refused unless enabled:
  --no-user         USER is not listed in CAPA, and USER and PASS both get
                    "-ERR [AUTH] plaintext login disallowed" (Cyrus with allowplaintext: no)
  --apop            the greeting carries an APOP timestamp (as --apop-greeting) and APOP
                    user md5(timestamp password) is accepted
  --sasl MECH       (repeatable, or comma-separated) CAPA lists "SASL MECH..." (before login,
                    in the order given) and AUTH MECH is accepted (RFC 5034), MECH one of
                    PLAIN, LOGIN, XOAUTH2, OAUTHBEARER. Any other AUTH gets -ERR. Challenges
                    are "+ base64"; "*" from the client cancels ("-ERR authentication
                    cancelled"); an initial response is taken ("=" for an empty one). AUTH
                    command lines and the client's responses may be up to 65536 octets.
                    PLAIN: authzid empty or --user, authcid --user, --password. LOGIN: prompts
                    "Username:" and "Password:".
                    XOAUTH2 ("user=U^Aauth=Bearer T^A^A") and OAUTHBEARER (RFC 7628, "n,a=U,^A
                    host=H^Aport=P^Aauth=Bearer T^A^A") succeed when U is --user and T is an
                    accepted token: every --token T, the lines of --token-file FILE (re-read at
                    each attempt, so a test can change them), or --password when neither is
                    given. A refused token (or a malformed response) gets, with --oauth-fail
                    challenge (default), a "+ base64(JSON)" failure challenge
                    ({"status":"401",...} for XOAUTH2, {"status":"invalid_token",...} for
                    OAUTHBEARER), then, whatever the client answers, "-ERR [AUTH] invalid
                    token" (the record says whether the answer was the one the mechanism asks
                    for: an empty line for XOAUTH2, "AQ==" for OAUTHBEARER); with --oauth-fail
                    err the -ERR comes at once.
  --oauth-count-file FILE  the number of OAuth responses received by this server process in
                    all sessions, rewritten after each one
  --capa-silent     CAPA gets no reply at all (nothing after it is processed either): the
                    client must time out
CAPA: CAPA, TOP (unless --no-top), USER (before login), UIDL, PIPELINING, RESP-CODES,
  AUTH-RESP-CODE, EXPIRE 0 (with --expire0 or --expire0-enforce), STLS (with --stls, before
  TLS), UTF8 USER (with --utf8), the --capa-extra lines, IMPLEMENTATION fakepop3d (or
  --implementation TEXT). --no-capa: CAPA answers -ERR. --no-pipelining: no PIPELINING.
  --no-uidl: UIDL answers -ERR and is not listed. --expire0-enforce also deletes, at a
  committed QUIT, every message that was retrieved with RETR in that session.
Commands: USER PASS QUIT CAPA STLS STAT LIST UIDL RETR TOP DELE NOOP RSET (and UTF8 with
  --utf8), case-insensitive.
  Anything else, or a command in the wrong state, gets -ERR; a line longer than 512 octets
  gets "-ERR line too long" (one reply; the rest of it up to LF is discarded).
TLS: --stls CERT KEY offers STLS ("+OK Begin TLS negotiation", then the handshake; plaintext
  the client sent after STLS is discarded). --ssl CERT KEY: implicit TLS (POP3S).
Processing model: the server reads commands as they come (no blocking, reading is never
  held up by replies) into a time-stamped queue; one task takes them in order, each when it
  is due, processes it and writes its reply completely before taking the next. So commands
  take effect strictly in order, and a command after a point where the server closed or
  stalled is never processed (nor are commands after QUIT).
--latency MS: an item is due MS milliseconds after it was read (the greeting: after accept),
  a one-way delay, not a stall: a pipelined client sees a total time of a few x MS, a
  lock-step one about (commands x MS).

Faults. They act only in the sessions listed by --fault-sessions (comma-separated session
numbers, 1-based in order of accepted connections, default "1"; "all" = every session).
Command numbers count every command line of the session from 1 (CAPA, USER, PASS ... too).
Byte counts are payload bytes sent by the server, greeting included (plaintext under TLS).
  --drop-after-bytes K   send K bytes in total, then close (FIN; close_notify under TLS)
  --stall-after-bytes K  send K bytes, then send nothing more and process nothing more, but
                         keep the connection open and keep reading (and recording) commands
                         until the client goes away
  --err-on-retr N        RETR N gets "-ERR [SYS/TEMP] simulated failure" (repeatable)
  --err-on-dele N        DELE N gets "-ERR [SYS/TEMP] simulated failure" (repeatable)
  --drop-reply N         command N is processed but its reply is never sent (repeatable)
  --dup-reply N          command N's reply is sent twice (repeatable)
  --garbage-after N      after command N's reply, send one --garbage-text line (repeatable)
  --garbage-text TEXT    default "*** fakepop3d garbage ***"
  --truncate-retr N      send the first half of RETR N's whole reply, then close (repeatable)
  --no-greeting          never send a greeting (commands are still processed)
  --greeting-text TEXT   send TEXT verbatim (plus CRLF) as the greeting, e.g. "-ERR busy"
  --close-after-pass     close right after the reply to PASS has been sent
  --drop-after-login     after a login's +OK, the commands received before it was sent (those
                         pipelined behind PASS, APOP or AUTH) are discarded unanswered, as
                         Courier's pop3login loses them; later ones are served.  The record's
                         "dropped_after_login" counts them
  --drop-at-quit         QUIT is not processed: no reply, no UPDATE state (nothing marked is
                         deleted), the server closes the connection (Courier over STLS)
  --hold-after-bytes K   with --hold-until FILE: send K bytes, then create FILE.held and send
                         nothing more (commands are still read) until FILE exists; then go on
                         (a test fills the disk meanwhile, whatever the machine's load)
  --drip WHAT            send part of a reply one byte at a time, --drip-interval apart:
                         greeting: the whole greeting; status: the status line of the reply
                         to each --drip-cmd command (the rest follows at once); body:
                         everything after the +OK line of each --drip-cmd reply.  Stops
                         processing when the client goes away in the middle.
  --drip-interval S      seconds between dripped bytes (default 0.5)
  --drip-cmd WORD        the command whose replies --drip status|body slows (default RETR)
  --body-rate BPS        not a fault, every session: send each RETR +OK body at about BPS
                         octets per second (pieces of BPS/16 octets), e.g. a slow link
A server-side close is a lingering one: shutdown(SHUT_WR), then input is read and discarded
until the client closes (at most 3 s), so the client really receives every byte sent.

Record (--record FILE): one JSON object per session appended to FILE as one line (JSON
Lines), written when the session ends, and also for sessions still open at shutdown. Keys:
  session        number of the session (1-based, order of accepted connections)
  peer           "addr:port" of the client
  tls            "none", "implicit" or "stls" (STLS completed)
  faults         list of the fault options active in this session ([] when none)
  user           argument of the last USER command, or null
  authenticated  true after a successful login (PASS, APOP or AUTH)
  auth           how that login was made: "user", "apop", "plain", "login", "xoauth2",
                 "oauthbearer", or null
  auth_attempts  every login attempt, in order, as "METHOD:ok", "METHOD:fail" or
                 "METHOD:cancelled" (METHOD as for auth)
  oauth_tokens   the OAuth tokens received in this session, as "len:<length>" strings
                 (never the tokens themselves)
  oauth_host     host=,port= of the last OAUTHBEARER response ("H:P"), or null
  oauth_ack      for the last OAuth failure challenge: true when the client answered as its
                 mechanism asks, false otherwise, null when none was sent
  messages       number of messages in the mailbox snapshot taken at login (null if none)
  commands       every command line received, in order, without its line end, decoded as
                 Latin-1; "PASS ***" stands for any PASS, "APOP user ***" for APOP,
                 "AUTH MECH ***" for an initial response and "***" for each client response
                 in an AUTH exchange ("*" and "" stay as they are); lines cut to 600 characters;
                 a line over 512 octets is "<line too long>"
  processed      how many of them were processed (the rest came after QUIT, a close or a
                 stall, or were plaintext after STLS)
  retrieved      message numbers for which RETR answered +OK, in order (repeats kept)
  utf8           true if the client sent UTF8 (with --utf8)
  held           true if --hold-after-bytes held this session
  marked         message numbers marked by DELE at the end of the session
  quit           true if a QUIT was processed
  committed      true if it was processed in the TRANSACTION state (UPDATE state entered)
  deleted        message numbers removed by the commit, sorted ([] unless committed)
  deleted_uids   their UIDs (in the sha1 mode the stable ones), same order
  writes         number of reads from the socket that held at least one complete command line
  rounds         number of times command data arrived while nothing was outstanding, i.e.
                 every earlier command had been processed and its reply (and the greeting)
                 completely written to the socket: nothing in the queue and nothing in the
                 transport's write buffer. Counted once per read from the socket (a read that
                 brings ten pipelined commands at an idle moment counts 1). It measures how
                 often the client waited for the server: a lock-step client scores one per
                 command; a client that pipelines everything scores one per phase (USER, PASS,
                 UIDL, RETR..., DELE...+QUIT: about 5); a sliding window of W commands scores
                 about one per W commands, since with a fixed latency replies come in bursts.
                 Deterministic with --latency of 10 ms or more (the queue then holds the
                 commands in flight); without latency a TCP segment boundary can add a count,
                 so treat it as an upper bound there.
  rounds_txn     the same, counting only reads that arrived after a successful PASS had been
                 processed
  bytes_in, bytes_out   payload octets received / sent
  stls_discarded about how many octets the client sent after STLS in plaintext (dropped)
  start          Unix time of accept; duration: seconds
  end            why it ended: "quit", "client-closed", "fault:drop-after-bytes",
                 "fault:truncate-retr", "fault:close-after-pass", "fault:drop-at-quit",
                 "shutdown", "error:<text>"
--verbose: one line per session on stderr when it ends (and a few startup/shutdown notes).
"""

import argparse
import asyncio
import collections
import hashlib
import json
import os
import signal
import ssl
import sys
import time

MAX_LINE = 512
MAX_AUTH_LINE = 65536  # AUTH lines and SASL responses (OAuth tokens are long)
SASL_MECHS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")
POP3_WORDS = (b"USER", b"PASS", b"APOP", b"AUTH", b"CAPA", b"STLS", b"QUIT", b"STAT", b"LIST",
              b"UIDL", b"RETR", b"TOP", b"DELE", b"NOOP", b"RSET", b"UTF8")
CHUNK = 65536
QUEUE_SOFT_LIMIT = 5000  # stop reading while this many command lines wait in the queue
LINGER_SECONDS = 3.0

SIMULATED_ERR = b"-ERR [SYS/TEMP] simulated failure\r\n"


def log(msg):
    print("fakepop3d: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Messages


def wire_body(raw):
    """Return (size, stuffed): the CRLF form's size and the dot-stuffed lines plus ".\\r\\n"."""
    if not raw:
        return 0, b".\r\n"
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # raw ended with LF: no partial last line
    out = []
    size = 0
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]  # an existing CRLF stays one CRLF
        size += len(line) + 2
        if line.startswith(b"."):
            line = b"." + line
        out.append(line)
        out.append(b"\r\n")
    out.append(b".\r\n")
    return size, b"".join(out)


def split_header(raw):
    """(head, sep, body): the header lines, the empty line that ends them ("\\n" or "\\r\\n",
    b"" when there is none) and the body."""
    if raw.startswith(b"\n") or raw.startswith(b"\r\n"):
        sep = b"\n" if raw.startswith(b"\n") else b"\r\n"
        return b"", sep, raw[len(sep):]
    a = raw.find(b"\n\n")
    b = raw.find(b"\r\n\r\n")
    if b >= 0 and (a < 0 or b < a):
        return raw[:b + 2], b"\r\n", raw[b + 4:]
    if a >= 0:
        return raw[:a + 1], b"\n", raw[a + 2:]
    return raw, b"", b""


def header_fields(head):
    """[(lower-case name, whole field bytes including continuation lines)]."""
    out = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((line.split(b":", 1)[0].strip().lower().decode("latin-1"), line))
    return out


def add_headers(raw, fields):
    """raw with the header fields [(name, value)] replacing any of the same name, appended at
    the end of the header block (in the message's own line-end style)."""
    head, sep, body = split_header(raw)
    eol = b"\r\n" if (sep == b"\r\n" or head.endswith(b"\r\n")) else b"\n"
    names = set(n.lower() for n, _ in fields)
    kept = [f for n, f in header_fields(head) if n not in names]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += eol
    new = [b"%s: %s%s" % (n.encode(), v.encode(), eol) for n, v in fields if v is not None]
    return b"".join(kept) + b"".join(new) + (sep or eol) + body


def header_uid(raw):
    """--uid-mode headers: MD5 of the Received and Message-ID fields (like popa3d and
    solid-pop3d, which hash some header lines): messages that share those fields share a
    UID, byte-identical copies included."""
    head = split_header(raw)[0]
    h = hashlib.md5()
    for name, field in header_fields(head):
        if name in ("received", "message-id"):
            h.update(field.rstrip(b"\r\n"))
            h.update(b"\n")
    return h.hexdigest()


def long_uid(seed, length):
    """A UID of exactly length characters (hex), derived from seed."""
    out = ""
    k = 0
    while len(out) < length:
        out += hashlib.sha1(seed.encode() + b"-%d" % k).hexdigest()
        k += 1
    return out[:length]


def has_8bit_header(raw):
    return any(c >= 0x80 for c in split_header(raw)[0])


def courier_rewrite(raw):
    """What Courier serves a client that has not sent UTF8 for a message with UTF-8 headers:
    a 7-bit wrapper that says so, with the original attached (base64)."""
    import base64
    fields = dict((n, f) for n, f in reversed(header_fields(split_header(raw)[0])))
    date = fields.get("date", b"Date: Mon, 01 Jan 2024 00:00:00 +0000\n").rstrip(b"\r\n")
    if any(c >= 0x80 for c in date):
        date = b"Date: Mon, 01 Jan 2024 00:00:00 +0000"
    b64 = base64.encodebytes(raw)
    return (b"From: Courier mail server <postmaster@fakepop3d.example.org>\n"
            b"Subject: Unicode message\n" + date + b"\n"
            b"Mime-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"=_courier_0\"\n"
            b"Content-Transfer-Encoding: 7bit\n"
            b"\n"
            b"This is a MIME-formatted message.\n"
            b"\n"
            b"--=_courier_0\n"
            b"Content-Type: text/plain; charset=us-ascii\n"
            b"\n"
            b"This message cannot be displayed: it has Unicode content, and your mail\n"
            b"program does not support it (RFC 6856). The original message is attached.\n"
            b"\n"
            b"--=_courier_0\n"
            b"Content-Type: message/global\n"
            b"Content-Transfer-Encoding: base64\n"
            b"\n" + b64 + b"\n--=_courier_0--\n")


class View:
    """A message as one session serves it (the stored bytes, rewritten or with headers
    inserted by a profile)."""
    __slots__ = ("raw", "size", "wire")

    def __init__(self, raw):
        self.raw = raw
        self.size, self.wire = wire_body(raw)

    def top(self, nlines):
        """Headers, the empty line and the first nlines body lines, stuffed and terminated."""
        head, sep, body = split_header(self.raw)
        if not sep:
            return wire_body(self.raw)[1]
        body_lines = body.split(b"\n")
        if body_lines and body_lines[-1] == b"":
            body_lines.pop()
        part = b"".join(line + b"\n" for line in body_lines[:nlines])
        return wire_body(head + sep + part)[1]


class Message(View):
    __slots__ = ("key", "orig", "uid", "serial", "added", "ximap_uid")

    def __init__(self, key, raw, uid, serial):
        super().__init__(raw)
        self.key = key  # file name, or generated index
        self.orig = raw  # the bytes as read or generated (raw may grow: --grow-at-quit)
        self.uid = uid
        self.serial = serial
        self.added = {}  # --grow-at-quit: header name -> value
        self.ximap_uid = None

    def set_added(self, added):
        """Re-derive raw from orig plus the added header fields; True if it changed."""
        if added == self.added:
            return False
        self.added = dict(added)
        raw = add_headers(self.orig, list(added.items())) if added else self.orig
        View.__init__(self, raw)
        return True


WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua pop3 maildir pipelining octets").split()


def generate_message(i, size):
    """Message i (1-based) of the --generate mailbox; depends only on i and size."""
    h = hashlib.sha1(b"fakepop3d-%d-%d" % (i, size)).hexdigest()
    minute = i % 60
    hour = (i // 60) % 24
    day = 1 + (i // 1440) % 28
    head = ("From: Sender %d <sender%d@example.org>\n"
            "To: Test User <test@example.net>\n"
            "Subject: Test message %d (%s)\n"
            "Date: Mon, %02d Jan 2024 %02d:%02d:00 +0000\n"
            "Message-ID: <%s.%d@fakepop3d.example.org>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=us-ascii\n"
            "\n") % (i % 7, i % 7, i, h[:8], day, hour, minute, h[:16], i)
    body = []
    total = len(head)
    n = 0
    seed = int(h[:8], 16)
    if i % 10 == 1:
        body.append("A line that is exactly one dot follows:")
        body.append(".")
    while total + sum(len(x) + 1 for x in body) < size or n < 3:
        n += 1
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        words = [WORDS[(seed >> k) % len(WORDS)] for k in range(0, 24, 3)]
        line = " ".join(words)
        if n % 5 == 0:
            line = "." + line  # dot-stuffing on the wire
        elif n % 11 == 0:
            line = ".." + line
        body.append("%d %s" % (n, line) if not line.startswith(".") else line)
    text = head + "\n".join(body) + "\n"
    return text.encode("ascii")


class Mailbox:
    """The server's mailbox: shared by sessions, changed only by a committed QUIT."""

    def __init__(self, opts):
        self.maildir = opts.maildir
        self.uid_mode = opts.uid_mode
        self.uid_len = opts.uid_len
        self.messages = []  # current list, in order
        self.cache = {}  # maildir: name -> (mtime_ns, size, Message)
        self.next_serial = 1
        self.locked_by = None
        self.imap_uidnext = 1  # --grow-at-quit: the next X-UID
        self.imap_uidvalidity = 1700000000
        if opts.generate:
            count, size = opts.generate
            for i in range(1, count + 1):
                self.messages.append(self._make(i, generate_message(i, size)))
        else:
            self.refresh()

    def _make(self, key, raw, dup=False):
        if self.uid_mode == "headers":
            uid = header_uid(raw)
        elif dup:
            uid = hashlib.sha1(str(key).encode() + b"\0" + raw).hexdigest()[:20]
        else:
            uid = hashlib.sha1(raw).hexdigest()[:20]
        if str(key) in self.uid_len:
            uid = long_uid(uid, self.uid_len[str(key)])
        m = Message(key, raw, uid, self.next_serial)
        self.next_serial += 1
        return m

    def refresh(self):
        """Re-read --maildir (new files appear, removed ones vanish). No-op otherwise."""
        if not self.maildir:
            return
        names = sorted(n for n in os.listdir(self.maildir) if not n.startswith("."))
        msgs = []
        seen_content = set()
        newcache = {}
        for name in names:
            path = os.path.join(self.maildir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not os.path.isfile(path):
                continue
            old = self.cache.get(name)
            if old and old[0] == st.st_mtime_ns and old[1] == st.st_size:
                m = old[2]
            else:
                try:
                    with open(path, "rb") as f:
                        raw = f.read()
                except OSError:
                    continue
                m = self._make(name, raw, dup=hashlib.sha1(raw).hexdigest()[:20] in seen_content)
            seen_content.add(hashlib.sha1(m.orig).hexdigest()[:20])
            newcache[name] = (st.st_mtime_ns, st.st_size, m)
            msgs.append(m)
        self.cache = newcache
        self.messages = msgs

    def commit(self, gone):
        """Remove the Message objects in gone (UPDATE state)."""
        ids = set(id(m) for m in gone)
        self.messages = [m for m in self.messages if id(m) not in ids]
        if self.maildir:
            for m in gone:
                try:
                    os.unlink(os.path.join(self.maildir, m.key))
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log("cannot unlink %s: %s" % (m.key, e))
                self.cache.pop(m.key, None)

    def grow(self, kept, retrieved):
        """--grow-at-quit (GNU Mailutils rewriting its mbox at QUIT): each message in kept
        gets an X-UID (once), a Status (RO once retrieved, else O), and the first one the
        X-IMAPbase line (UIDVALIDITY and the next UID); the UIDs stay."""
        for i, m in enumerate(kept):
            if m.ximap_uid is None:
                m.ximap_uid = self.imap_uidnext
                self.imap_uidnext += 1
        for i, m in enumerate(kept):
            added = {}
            if i == 0:
                added["X-IMAPbase"] = "%d %d" % (self.imap_uidvalidity, self.imap_uidnext)
            added["X-UID"] = str(m.ximap_uid)
            seen = m.added.get("Status") == "RO" or id(m) in retrieved
            added["Status"] = "RO" if seen else "O"
            m.set_added(added)

    def uid_of(self, m, num):
        if self.uid_mode == "number":
            return str(m.serial)
        if self.uid_mode == "msgnum":
            return str(num)
        return m.uid


# ---------------------------------------------------------------------------------------------
# Sessions


class Item:
    __slots__ = ("due", "kind", "data", "cmdno")

    def __init__(self, due, kind, data, cmdno):
        self.due = due  # when it is processed and its reply sent
        self.kind = kind  # "raw" (greeting bytes) or "cmd" (a command line)
        self.data = data
        self.cmdno = cmdno


class Session:
    def __init__(self, server, num, reader, writer, tls):
        self.srv = server
        self.opts = server.opts
        self.num = num
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        o = self.opts
        self.faulty = o.fault_sessions is None or num in o.fault_sessions
        self.state = "auth"  # auth | txn | done
        self.tls = tls
        self.user = None
        self.apop_ts = None  # the greeting's APOP timestamp (bytes), with --apop
        self.sasl = None  # AUTH exchange in progress: {"mech": ..., "step": ...}
        self.recv_sasl = False  # receive(): the lines now are (likely) SASL responses
        self.auth = None
        self.auth_attempts = []
        self.oauth_tokens = []
        self.oauth_host = None
        self.oauth_ack = None
        self.msgs = None  # snapshot at login
        self.marked = set()
        self.retrieved = []
        self.cmdno = 0  # number of the command being processed
        self.ncmds = 0  # command lines received
        self.processed = 0
        self.out = (b"", None)
        self.stls_accepted = False
        self.commands = []
        self.quit = False
        self.committed = False
        self.deleted = []
        self.deleted_uids = []
        self.utf8 = False  # the client sent UTF8
        self.views = {}  # id(Message) -> View served in this session
        self.held = False  # --hold-after-bytes: the hold happened
        self.writes = 0
        self.rounds = 0
        self.rounds_txn = 0
        self.bytes_in = 0
        self.stls_discarded = 0
        self.dropped_after_login = 0
        self.bytes_out = 0
        self.start = time.time()
        self.end = None
        # output side
        self.queue = collections.deque()
        self.inflight = 0  # greeting + commands whose reply is not completely written
        self.has_items = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.below_limit = asyncio.Event()
        self.below_limit.set()
        self.stalled = False
        self.closing = False  # server-side close started
        self.linger_handle = None
        self.writer_task = None
        try:
            peer = writer.get_extra_info("peername")
            self.peer = "%s:%s" % (peer[0], peer[1])
        except Exception:
            self.peer = "?"

    # -- faults ---------------------------------------------------------------------------
    def fault(self, name):
        return self.faulty and getattr(self.opts, name)

    def fault_n(self, name, n):
        return self.faulty and n in getattr(self.opts, name)

    def active_faults(self):
        if not self.faulty:
            return []
        o = self.opts
        out = []
        for name in ("drop_after_bytes", "stall_after_bytes"):
            v = getattr(o, name)
            if v is not None:
                out.append("--%s %d" % (name.replace("_", "-"), v))
        for name in ("err_on_retr", "err_on_dele", "drop_reply", "dup_reply", "garbage_after",
                     "truncate_retr"):
            for v in getattr(o, name):
                out.append("--%s %d" % (name.replace("_", "-"), v))
        if o.hold_after_bytes is not None:
            out.append("--hold-after-bytes %d" % o.hold_after_bytes)
        for name in ("no_greeting", "close_after_pass", "drop_at_quit"):
            if getattr(o, name):
                out.append("--" + name.replace("_", "-"))
        if o.drip:
            out.append("--drip " + o.drip)
        if o.greeting_text is not None:
            out.append("--greeting-text")
        return out

    # -- output ---------------------------------------------------------------------------
    def enqueue(self, kind, data, cmdno=0):
        """Queue a greeting ("raw", bytes) or a command line ("cmd", bytes or None)."""
        if self.stalled or self.closing or (self.writer_task and self.writer_task.done()):
            return  # nothing will ever be processed or written any more
        self.inflight += 1
        self.queue.append(Item(self.loop.time() + self.opts.latency / 1000.0, kind, data, cmdno))
        if len(self.queue) > QUEUE_SOFT_LIMIT:
            self.below_limit.clear()
        self.idle.clear()
        self.has_items.set()

    def reply(self, data, action=None):
        """Set the reply to the current command, applying the per-command faults."""
        n = self.cmdno
        if self.fault_n("drop_reply", n):
            data = b""
        elif self.fault_n("dup_reply", n):
            data = data + data
        if self.fault_n("garbage_after", n):
            data = data + self.opts.garbage_text.encode("latin-1", "replace") + b"\r\n"
        self.out = (data, action)

    def outstanding(self):
        if self.inflight > 0:
            return True
        try:
            return self.writer.transport.get_write_buffer_size() > 0
        except Exception:
            return False

    async def send(self, data):
        """Write data subject to the byte faults; returns None, "close" or "stall"."""
        limit = None
        what = None
        o = self.opts
        if self.faulty and o.drop_after_bytes is not None:
            limit, what = o.drop_after_bytes, "close"
        if self.faulty and o.stall_after_bytes is not None and (
                limit is None or o.stall_after_bytes < limit):
            limit, what = o.stall_after_bytes, "stall"
        if (self.faulty and o.hold_after_bytes is not None and not self.held
                and self.bytes_out + len(data) > o.hold_after_bytes):
            self.held = True
            first = data[:max(0, o.hold_after_bytes - self.bytes_out)]
            data = data[len(first):]
            res = await self.send(first) if first else None
            if res is not None:
                return res
            if not await self.hold():
                self.stalled = True
                return "stall"
        cut = False
        if limit is not None and self.bytes_out + len(data) >= limit:
            data = data[:max(0, limit - self.bytes_out)]
            cut = True
        for off in range(0, len(data), CHUNK):
            piece = data[off:off + CHUNK]
            self.writer.write(piece)
            self.bytes_out += len(piece)
            await self.writer.drain()
        if cut:
            if what == "stall":
                self.stalled = True
                return "stall"
            self.end = self.end or "fault:drop-after-bytes"
            return "close"
        return None

    async def hold(self):
        """--hold-after-bytes: create FILE.held, then wait until --hold-until FILE exists
        (False if the client went away first)."""
        o = self.opts
        try:
            with open(o.hold_until + ".held", "w") as f:
                f.write("%d\n" % self.bytes_out)
        except OSError as e:
            log("cannot create %s.held: %s" % (o.hold_until, e))
        if o.verbose:
            log("session %d: holding after %d bytes until %s exists"
                % (self.num, self.bytes_out, o.hold_until))
        while not os.path.exists(o.hold_until):
            if self.end is not None:
                return False
            await asyncio.sleep(0.02)
        return True

    async def send_paced(self, item, data):
        """send(), slowed down by --drip and --body-rate where they apply to this item."""
        o = self.opts
        kw = b""
        if item.kind == "cmd" and item.data:
            kw = item.data.split(b" ", 1)[0].upper()
        eol = data.find(b"\n") + 1
        head, slow, tail, piece, pause = data, b"", b"", 1, o.drip_interval
        if self.faulty and o.drip == "greeting" and item.kind == "raw":
            head, slow = b"", data
        elif self.faulty and o.drip and kw == o.drip_cmd.upper().encode() and eol:
            if o.drip == "status":
                head, slow, tail = b"", data[:eol], data[eol:]
            elif o.drip == "body" and data.startswith(b"+OK"):
                head, slow = data[:eol], data[eol:]
        elif o.body_rate and kw == b"RETR" and data.startswith(b"+OK") and eol:
            head, slow = data[:eol], data[eol:]
            piece = max(1, o.body_rate // 16)
            pause = piece / o.body_rate
        res = await self.send(head) if head else None
        for off in range(0, len(slow), piece):
            if res is not None:
                return res
            if self.end is not None:  # the client went away: stop here, like a write error
                self.stalled = True
                return "stall"
            if off:
                await asyncio.sleep(pause)
            res = await self.send(slow[off:off + piece])
        if res is None and tail:
            res = await self.send(tail)
        return res

    async def writer_loop(self):
        """Process the queue in order: wait for each item's due time, run, send its reply."""
        try:
            while True:
                while not self.queue:
                    self.has_items.clear()
                    self.idle.set()
                    await self.has_items.wait()
                item = self.queue[0]
                delay = item.due - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                action = None
                if item.kind == "cmd":
                    if self.state == "done":
                        data = b""  # after QUIT: ignored
                    else:
                        self.cmdno = item.cmdno
                        self.out = (b"", None)
                        self.command(item.data)
                        self.processed += 1
                        data, action = self.out
                else:
                    data = item.data
                res = await self.send_paced(item, data)
                if action == "silent":  # --capa-silent: like a stall, from here on
                    self.stalled = True
                    res = "stall"
                self.queue.popleft()
                if len(self.queue) <= QUEUE_SOFT_LIMIT // 2:
                    self.below_limit.set()
                if res == "stall":
                    # Nothing is processed or sent any more; the reader goes on reading.
                    self.queue.clear()
                    return
                self.inflight -= 1
                if res == "close":
                    self.server_close()
                    return
                if action == "stls":
                    self.stls_accepted = True
                elif action == "drop-pipelined":
                    # --drop-after-login: what arrived behind the login is lost.
                    limit = self.opts.drop_after_login_count or len(self.queue)
                    while self.queue and self.queue[0].kind == "cmd" and limit > 0:
                        limit -= 1
                        self.queue.popleft()
                        self.inflight -= 1
                        self.dropped_after_login += 1
                    if len(self.queue) <= QUEUE_SOFT_LIMIT // 2:
                        self.below_limit.set()
                elif action is not None:
                    if self.end in (None, "client-closed"):
                        self.end = action
                    self.server_close()
                    return
        except (ConnectionError, OSError, ssl.SSLError) as e:
            self.end = self.end or "error:%s" % e.__class__.__name__
            self.abort()
        finally:
            self.idle.set()
            self.below_limit.set()

    def server_close(self):
        """Lingering close: FIN now, keep draining input, abort after LINGER_SECONDS."""
        if self.closing:
            return
        self.closing = True
        if self.srv.mailbox.locked_by is self:
            self.srv.mailbox.locked_by = None  # the session is over for the mailbox
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            else:
                self.writer.close()
        except Exception:
            self.abort()
            return
        self.linger_handle = self.loop.call_later(LINGER_SECONDS, self.abort)

    def abort(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass

    # -- input ----------------------------------------------------------------------------
    def receive(self, line):
        """Record one command line at arrival and queue it (None: a line that was too long)."""
        self.ncmds += 1
        if line is None:
            text = "<line too long>"
            self.recv_sasl = False
        else:
            kw = line.split(b" ", 1)[0].upper()
            if self.recv_sasl and kw not in POP3_WORDS:
                text = line.decode("latin-1") if line in (b"", b"*") else "***"
            elif kw == b"PASS":
                text = "PASS ***"
            elif kw == b"APOP":
                words = line.split()
                text = "APOP %s ***" % words[1].decode("latin-1")[:100] if len(words) > 1 \
                    else "APOP"
            elif kw == b"AUTH" and len(line.split()) > 2:
                text = "AUTH %s ***" % line.split()[1].decode("latin-1")[:40]
            else:
                text = line.decode("latin-1")[:600]
            self.recv_sasl = kw == b"AUTH" or (self.recv_sasl and kw not in POP3_WORDS)
        self.commands.append(text)
        self.enqueue("cmd", line, self.ncmds)

    async def run(self):
        o = self.opts
        self.writer_task = asyncio.create_task(self.writer_loop())
        if not self.fault("no_greeting"):
            if self.faulty and o.greeting_text is not None:
                g = o.greeting_text.encode("utf-8", "replace") + b"\r\n"
            elif o.apop_greeting or o.apop:
                self.apop_ts = b"<%d.%d.%d@fakepop3d.example.org>" % (
                    os.getpid(), int(self.start), self.num)
                g = b"+OK POP3 server ready " + self.apop_ts + b"\r\n"
            else:
                g = b"+OK fakepop3d ready\r\n"
            self.enqueue("raw", g)
        buf = b""
        discarding = False
        limit = MAX_AUTH_LINE if o.sasl else MAX_LINE  # command() checks MAX_LINE again
        while True:
            try:
                data = await self.reader.read(CHUNK)
            except (ConnectionError, OSError, ssl.SSLError) as e:
                self.end = self.end or "error:%s" % e.__class__.__name__
                break
            if not data:
                self.end = self.end or "client-closed"
                break
            if self.closing:
                continue  # lingering: discard
            self.bytes_in += len(data)
            buf += data
            lines = []
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    if len(buf) > limit and not discarding:
                        lines.append(None)  # too long
                        discarding = True
                    if discarding:
                        buf = b""
                    break
                line, buf = buf[:i], buf[i + 1:]
                if discarding:
                    discarding = False
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                lines.append(line if len(line) <= limit else None)
            if not lines:
                continue
            self.writes += 1
            if not self.outstanding():
                self.rounds += 1
                if self.state == "txn":
                    self.rounds_txn += 1
            k = 0
            while k < len(lines):
                line = lines[k]
                k += 1
                self.receive(line)
                if line is None or line.split(b" ", 1)[0].upper() != b"STLS":
                    continue
                # Stop here until STLS has been answered; if it was accepted, whatever the
                # client sent after it in plaintext (an injection) is dropped, and counted.
                await self.idle.wait()
                if self.stls_accepted and not self.closing and not self.stalled:
                    self.stls_accepted = False
                    self.stls_discarded += len(buf) + sum(
                        len(x) + 2 if x is not None else MAX_LINE for x in lines[k:])
                    buf = b""
                    await self.start_tls()
                    break
            if len(self.queue) > QUEUE_SOFT_LIMIT:
                await self.below_limit.wait()
        # The client is gone (or we closed). Let queued replies out unless they cannot go.
        if not self.closing and not self.stalled and self.end == "client-closed":
            try:
                await asyncio.wait_for(self.idle.wait(), o.latency / 1000.0 + 5)
            except asyncio.TimeoutError:
                pass

    async def start_tls(self):
        try:
            await self.writer.start_tls(self.srv.ssl_ctx)
            self.tls = "stls"
        except Exception as e:
            self.end = self.end or "error:tls:%s" % e.__class__.__name__
            self.abort()

    # -- commands -------------------------------------------------------------------------
    def command(self, line):
        """Process one command line (None: too long); the reply goes to self.out."""
        if line is None:
            self.sasl = None
            return self.reply(b"-ERR line too long\r\n")
        if self.sasl is not None:
            return self.sasl_response(line)
        if len(line) > MAX_LINE and line[:5].upper() != b"AUTH ":
            return self.reply(b"-ERR line too long\r\n")
        kw, _, rest = line.partition(b" ")
        try:
            kw = kw.decode("ascii").upper()
        except UnicodeDecodeError:
            kw = "?"
        args = rest.split()
        o = self.opts
        st = self.state

        if kw == "QUIT":
            if self.fault("drop_at_quit"):
                # Courier over STLS, sometimes: no reply, no UPDATE state, the connection
                # just goes away.
                self.state = "done"
                return self.reply(b"", action="fault:drop-at-quit")
            self.quit = True
            if st == "txn":
                self.commit()
                self.reply(b"+OK fakepop3d signing off (%d messages deleted)\r\n"
                           % len(self.deleted), action="quit")
            else:
                self.reply(b"+OK bye\r\n", action="quit")
            self.state = "done"
            return
        if kw == "CAPA":
            if o.capa_silent:
                # No reply, and nothing after it is processed: the client must time out.
                return self.reply(b"", action="silent")
            if o.no_capa:
                return self.reply(b"-ERR unknown command\r\n")
            caps = ["CAPA"]
            if not o.no_top:
                caps.append("TOP")
            if st == "auth" and not o.no_user:
                caps.append("USER")
            if st == "auth" and o.sasl:
                caps.append("SASL " + " ".join(o.sasl))
            if not o.no_uidl:
                caps.append("UIDL")
            if not o.no_pipelining:
                caps.append("PIPELINING")
            caps += ["RESP-CODES", "AUTH-RESP-CODE"]
            if o.expire0 or o.expire0_enforce:
                caps.append("EXPIRE 0")
            if st == "auth" and o.stls and self.tls == "none":
                caps.append("STLS")
            if o.utf8:
                caps.append("UTF8 USER")
            caps += o.capa_extra
            caps.append("IMPLEMENTATION " + o.implementation)
            body = "".join(c + "\r\n" for c in caps).encode()
            return self.reply(b"+OK Capability list follows\r\n" + body + b".\r\n")
        if kw == "NOOP" and st == "txn":
            return self.reply(b"+OK\r\n")
        if kw == "UTF8" and o.utf8:
            # RFC 6856 allows it in the AUTHORIZATION state; Courier also takes it after
            # login. It changes what RETR and TOP serve (--utf8-rewrite).
            if args:
                return self.reply(b"-ERR UTF8 takes no argument\r\n")
            self.utf8 = True
            self.views.clear()
            return self.reply(b"+OK UTF8 enabled\r\n")

        if st == "auth":
            if kw == "STLS":
                if not o.stls:
                    return self.reply(b"-ERR unknown command\r\n")
                if self.tls != "none":
                    return self.reply(b"-ERR already using TLS\r\n")
                return self.reply(b"+OK Begin TLS negotiation\r\n", action="stls")
            if kw in ("USER", "PASS") and o.no_user:
                if kw == "PASS":
                    self.auth_attempts.append("user:fail")
                return self.reply(b"-ERR [AUTH] plaintext login disallowed\r\n")
            if kw == "USER":
                if not rest:
                    return self.reply(b"-ERR missing argument\r\n")
                self.user = rest.decode("latin-1")
                return self.reply(b"+OK\r\n")
            if kw == "PASS":
                if self.user is None:
                    return self.reply(b"-ERR USER first\r\n")
                ok = self.user == o.user and rest.decode("latin-1") == o.password
                return self.login("user", ok)
            if kw == "APOP" and o.apop:
                if len(args) != 2:
                    return self.reply(b"-ERR APOP needs two arguments\r\n")
                self.user = args[0].decode("latin-1")
                want = hashlib.md5(self.apop_ts + o.password.encode("latin-1")).hexdigest()
                return self.login("apop", self.user == o.user and args[1].decode("latin-1") == want)
            if kw == "AUTH" and o.sasl:
                return self.sasl_start(args)
            if kw in ("APOP", "AUTH"):
                return self.reply(b"-ERR %s not supported\r\n" % kw.encode())
            if kw in ("STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP"):
                return self.reply(b"-ERR command not valid in this state\r\n")
            return self.reply(b"-ERR unknown command\r\n")

        # TRANSACTION
        if kw == "STAT":
            if args:
                return self.reply(b"-ERR too many arguments\r\n")
            live = self.live()
            return self.reply(b"+OK %d %d\r\n" % (len(live),
                                                   sum(self.list_size(m) for _, m in live)))
        if kw == "LIST" or (kw == "UIDL" and not o.no_uidl):
            uidl = kw == "UIDL"
            mb = self.srv.mailbox

            def item(n, m):
                if uidl:
                    return b"%d %s" % (n, mb.uid_of(m, n).encode())
                return b"%d %d" % (n, self.list_size(m))
            if len(args) > 1:
                return self.reply(b"-ERR too many arguments\r\n")
            if args:
                n, m = self.msg_arg(args[0])
                if m is None:
                    return self.reply(n)
                return self.reply(b"+OK " + item(n, m) + b"\r\n")
            live = self.live()
            body = b"".join(item(n, m) + b"\r\n" for n, m in live)
            head = b"+OK %d messages\r\n" % len(live) if not uidl else b"+OK\r\n"
            return self.reply(head + body + b".\r\n")
        if kw == "RETR":
            if len(args) != 1:
                return self.reply(b"-ERR RETR needs one argument\r\n")
            n, m = self.msg_arg(args[0])
            if m is None:
                return self.reply(n)
            if self.fault_n("err_on_retr", n):
                return self.reply(SIMULATED_ERR)
            self.retrieved.append(n)
            v = self.served(m)
            if o.retr_reply == "plain":
                data = b"+OK\r\n"
            elif o.retr_reply == "follow":
                data = b"+OK %d octets follow.\r\n" % v.size
            else:
                data = b"+OK %d octets\r\n" % v.size
            data += v.wire
            if self.fault_n("truncate_retr", n):
                return self.reply(data[:len(data) // 2], action="fault:truncate-retr")
            return self.reply(data)
        if kw == "TOP" and not o.no_top:
            if len(args) != 2 or not args[1].isdigit():
                return self.reply(b"-ERR TOP needs two arguments\r\n")
            n, m = self.msg_arg(args[0])
            if m is None:
                return self.reply(n)
            return self.reply(b"+OK\r\n" + self.served(m).top(int(args[1])))
        if kw == "DELE":
            if len(args) != 1:
                return self.reply(b"-ERR DELE needs one argument\r\n")
            n, m = self.msg_arg(args[0])
            if m is None:
                return self.reply(n)
            if self.fault_n("err_on_dele", n):
                return self.reply(SIMULATED_ERR)
            self.marked.add(n)
            return self.reply(b"+OK message %d deleted\r\n" % n)
        if kw == "RSET":
            self.marked.clear()
            return self.reply(b"+OK %d messages\r\n" % len(self.msgs))
        if kw in ("USER", "PASS", "APOP", "AUTH", "STLS"):
            return self.reply(b"-ERR command not valid in this state\r\n")
        return self.reply(b"-ERR unknown command\r\n")

    def login(self, method, ok):
        """The reply to a login attempt (PASS, APOP, the end of an AUTH exchange)."""
        o = self.opts
        action = "fault:close-after-pass" if self.fault("close_after_pass") else None
        self.auth_attempts.append("%s:%s" % (method, "ok" if ok else "fail"))
        if not ok:
            if method in ("xoauth2", "oauthbearer"):
                return self.reply(b"-ERR [AUTH] invalid token\r\n", action=action)
            return self.reply(b"-ERR [AUTH] invalid credentials\r\n", action=action)
        mb = self.srv.mailbox
        if mb.locked_by is not None and mb.locked_by is not self:
            return self.reply(b"-ERR [IN-USE] mailbox locked by another session\r\n",
                              action=action)
        try:
            mb.refresh()
        except OSError as e:
            return self.reply(b"-ERR [SYS/TEMP] cannot read mailbox: %s\r\n"
                              % str(e).encode("latin-1", "replace"), action=action)
        mb.locked_by = self
        self.msgs = list(mb.messages)
        self.state = "txn"
        self.auth = method
        if self.user is None:
            self.user = o.user
        total = sum(self.list_size(m) for m in self.msgs)
        if action is None and o.drop_after_login:
            action = "drop-pipelined"
        return self.reply(b"+OK logged in, %d messages (%d octets)\r\n"
                          % (len(self.msgs), total), action=action)

    def accepted_tokens(self):
        o = self.opts
        toks = set(o.token)
        if o.token_file:
            try:
                with open(o.token_file, encoding="latin-1") as f:
                    toks |= set(x.strip() for x in f if x.strip())
            except OSError as e:
                log("cannot read --token-file: %s" % e)
        if not o.token and not o.token_file:
            toks.add(o.password)
        return toks

    def count_oauth(self):
        self.srv.oauth_count += 1
        if self.opts.oauth_count_file:
            tmp = self.opts.oauth_count_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % self.srv.oauth_count)
            os.replace(tmp, self.opts.oauth_count_file)

    def sasl_start(self, args):
        """AUTH MECH [initial-response]."""
        import base64
        if not args:
            return self.reply(b"-ERR AUTH needs a mechanism\r\n")
        mech = args[0].decode("latin-1", "replace").upper()
        if mech not in self.opts.sasl or len(args) > 2:
            return self.reply(b"-ERR unsupported authentication mechanism\r\n")
        self.sasl = {"mech": mech, "step": 0, "failed": False}
        if len(args) == 2:
            if mech == "LOGIN":
                self.sasl = None
                return self.reply(b"-ERR LOGIN takes no initial response\r\n")
            return self.sasl_response(b"" if args[1] == b"=" else args[1])
        if mech == "LOGIN":
            return self.reply(b"+ " + base64.b64encode(b"Username:") + b"\r\n")
        return self.reply(b"+ \r\n")

    def sasl_response(self, line):
        """One client response within the AUTH exchange in self.sasl."""
        import base64
        import binascii
        x = self.sasl
        mech = x["mech"]
        method = mech.lower()
        if line == b"*":
            self.sasl = None
            self.auth_attempts.append(method + ":cancelled")
            return self.reply(b"-ERR authentication cancelled\r\n")
        if x["failed"]:
            # The client's answer to an OAuth failure challenge; the -ERR follows in any case.
            self.oauth_ack = line == (b"" if mech == "XOAUTH2" else b"AQ==")
            self.sasl = None
            return self.login(method, False)
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.sasl = None
            self.auth_attempts.append(method + ":fail")
            return self.reply(b"-ERR malformed base64\r\n")
        o = self.opts
        user, pw = o.user.encode("latin-1"), o.password.encode("latin-1")
        if mech == "PLAIN":
            self.sasl = None
            parts = raw.split(b"\0")
            ok = len(parts) == 3 and parts[0] in (b"", user) and parts[1] == user and parts[2] == pw
            if len(parts) == 3:
                self.user = parts[1].decode("latin-1")
            return self.login(method, ok)
        if mech == "LOGIN":
            if x["step"] == 0:
                x["user"] = raw
                x["step"] = 1
                return self.reply(b"+ " + base64.b64encode(b"Password:") + b"\r\n")
            self.sasl = None
            self.user = x["user"].decode("latin-1")
            return self.login(method, x["user"] == user and raw == pw)
        # XOAUTH2 / OAUTHBEARER
        self.count_oauth()
        u, tok = None, None
        if mech == "XOAUTH2":
            fields = raw.split(b"\x01")
            if len(fields) == 4 and fields[2:] == [b"", b""] and fields[0].startswith(b"user="):
                u = fields[0][5:]
                if fields[1].startswith(b"auth=Bearer "):
                    tok = fields[1][12:]
        else:
            gs2, _, rest = raw.partition(b",\x01")
            kv = dict(f.split(b"=", 1) for f in rest.split(b"\x01") if b"=" in f)
            if gs2.startswith(b"n,a=") and rest.endswith(b"\x01\x01"):
                u = gs2[4:].replace(b"=2C", b",").replace(b"=3D", b"=")
            if kv.get(b"auth", b"").startswith(b"Bearer "):
                tok = kv[b"auth"][7:]
            self.oauth_host = "%s:%s" % (kv.get(b"host", b"").decode("latin-1"),
                                         kv.get(b"port", b"").decode("latin-1"))
        if tok is not None:
            self.oauth_tokens.append("len:%d" % len(tok))
        if u is not None:
            self.user = u.decode("latin-1")
        ok = (u == user and tok is not None
              and tok.decode("latin-1") in self.accepted_tokens())
        if ok:
            self.sasl = None
            return self.login(method, True)
        if o.oauth_fail == "err":
            self.sasl = None
            return self.login(method, False)
        x["failed"] = True
        if mech == "XOAUTH2":
            js = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'
        else:
            js = b'{"status":"invalid_token","scope":"pop3","openid-configuration":' \
                 b'"https://fakepop3d.example.org/.well-known/openid-configuration"}'
        return self.reply(b"+ " + base64.b64encode(js) + b"\r\n")

    def served(self, m):
        """The View of m that RETR and TOP send in this session."""
        v = self.views.get(id(m))
        if v is None:
            o = self.opts
            raw = m.raw
            if o.utf8_rewrite and not self.utf8 and has_8bit_header(raw):
                raw = courier_rewrite(raw)
            if o.x_uidl:
                raw = add_headers(raw, [("X-UIDL", "%010d.%06d" % (int(self.start), self.num))])
            v = View(raw) if raw is not m.raw else m
            self.views[id(m)] = v
        return v

    def list_size(self, m):
        """The size LIST and STAT give: the stored message's, except that --x-uidl is counted
        (it is part of the server's message), the --utf8-rewrite is not (as Courier)."""
        if self.opts.x_uidl:
            return self.served(m).size
        return m.size

    def live(self):
        return [(i + 1, m) for i, m in enumerate(self.msgs) if i + 1 not in self.marked]

    def msg_arg(self, arg):
        """(number, Message) or (error reply, None)."""
        if not arg.isdigit() or len(arg) > 9:
            return b"-ERR invalid message number\r\n", None
        n = int(arg)
        if n < 1 or n > len(self.msgs):
            return b"-ERR no such message\r\n", None
        if n in self.marked:
            return b"-ERR message %d already deleted\r\n" % n, None
        return n, self.msgs[n - 1]

    def commit(self):
        mb = self.srv.mailbox
        nums = set(self.marked)
        if self.opts.expire0_enforce:
            nums |= set(self.retrieved)
        nums = sorted(nums)
        self.deleted = nums
        self.deleted_uids = [mb.uid_of(self.msgs[n - 1], n) for n in nums]
        mb.commit([self.msgs[n - 1] for n in nums])
        if self.opts.grow_at_quit:
            gone = set(nums)
            kept = [m for i, m in enumerate(self.msgs) if i + 1 not in gone]
            mb.grow(kept, set(id(self.msgs[n - 1]) for n in self.retrieved))
        self.committed = True

    # -- end ------------------------------------------------------------------------------
    def finish(self):
        if self.linger_handle:
            self.linger_handle.cancel()
        if self.srv.mailbox.locked_by is self:
            self.srv.mailbox.locked_by = None
        rec = {
            "session": self.num,
            "peer": self.peer,
            "tls": self.tls,
            "faults": self.active_faults(),
            "user": self.user,
            "authenticated": self.msgs is not None,
            "auth": self.auth,
            "auth_attempts": self.auth_attempts,
            "oauth_tokens": self.oauth_tokens,
            "oauth_host": self.oauth_host,
            "oauth_ack": self.oauth_ack,
            "messages": len(self.msgs) if self.msgs is not None else None,
            "commands": self.commands,
            "processed": self.processed,
            "retrieved": self.retrieved,
            "marked": sorted(self.marked),
            "quit": self.quit,
            "committed": self.committed,
            "deleted": self.deleted,
            "deleted_uids": self.deleted_uids,
            "utf8": self.utf8,
            "held": self.held,
            "writes": self.writes,
            "rounds": self.rounds,
            "rounds_txn": self.rounds_txn,
            "bytes_in": self.bytes_in,
            "stls_discarded": self.stls_discarded,
            "dropped_after_login": self.dropped_after_login,
            "bytes_out": self.bytes_out,
            "start": round(self.start, 3),
            "duration": round(time.time() - self.start, 3),
            "end": self.end or "client-closed",
        }
        if self.opts.record:
            try:
                with open(self.opts.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            except OSError as e:
                log("cannot write record: %s" % e)
        if self.opts.verbose:
            log("session %d %s tls=%s user=%s auth=%s cmds=%d rounds=%d/%d writes=%d quit=%s "
                "deleted=%d in=%d out=%d end=%s"
                % (self.num, self.peer, self.tls, self.user, rec["authenticated"],
                   len(self.commands), self.rounds, self.rounds_txn, self.writes,
                   self.quit, len(self.deleted), self.bytes_in, self.bytes_out, rec["end"]))


# ---------------------------------------------------------------------------------------------
# Server


class Server:
    def __init__(self, opts):
        self.opts = opts
        self.mailbox = Mailbox(opts)
        self.ssl_ctx = None
        pair = opts.stls or opts.ssl
        if pair:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pair[0], pair[1])
            self.ssl_ctx = ctx
        self.nsessions = 0
        self.ended = 0
        self.oauth_count = 0  # OAuth responses received, all sessions
        self.sessions = set()
        self.stop = None

    async def handle(self, reader, writer):
        self.nsessions += 1
        s = Session(self, self.nsessions, reader, writer, "implicit" if self.opts.ssl else "none")
        self.sessions.add(s)
        try:
            await s.run()
        except asyncio.CancelledError:
            s.end = s.end or "shutdown"
        except Exception as e:  # never let one session take the server down
            s.end = s.end or "error:%s" % e.__class__.__name__
            if self.opts.verbose:
                log("session %d: %r" % (s.num, e))
        finally:
            if s.writer_task:
                s.writer_task.cancel()
            try:
                writer.close()
                # Bounded: flush what is still buffered for a half-closed client.
                await asyncio.wait_for(writer.wait_closed(), 2)
            except BaseException:
                pass
            s.abort()
            s.finish()
            self.sessions.discard(s)
            self.ended += 1
            if self.opts.max_sessions and self.ended >= self.opts.max_sessions:
                self.stop.set()

    async def main(self):
        self.stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        verbose = self.opts.verbose

        def exc_handler(lp, ctx):
            if verbose:
                log("asyncio: %s %r" % (ctx.get("message"), ctx.get("exception")))
        loop.set_exception_handler(exc_handler)
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        server = await asyncio.start_server(
            self.handle, self.opts.host, self.opts.port,
            ssl=self.ssl_ctx if self.opts.ssl else None, reuse_address=True)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write("PORT %d\n" % port)
        sys.stdout.flush()
        if self.opts.port_file:
            tmp = self.opts.port_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, self.opts.port_file)
        if verbose:
            log("listening on %s port %d, %d messages" % (self.opts.host, port,
                                                        len(self.mailbox.messages)))
        try:
            await asyncio.wait_for(self.stop.wait(), self.opts.lifetime)
        except asyncio.TimeoutError:
            if verbose:
                log("lifetime over")
        server.close()
        for s in list(self.sessions):
            s.end = s.end or "shutdown"
            s.abort()
        # Give the sessions a moment to write their records.
        for _ in range(50):
            if not self.sessions:
                break
            await asyncio.sleep(0.02)


def parse_generate(text):
    count, _, size = text.partition(":")
    try:
        return int(count), int(size) if size else 2000
    except ValueError:
        raise argparse.ArgumentTypeError("expected N or N:SIZE")


def parse_sessions(text):
    if text.strip().lower() in ("all", "*"):
        return None
    try:
        return set(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected a comma-separated list of numbers or 'all'")


def parse_uid_len(text):
    key, _, n = text.partition("=")
    try:
        n = int(n)
    except ValueError:
        n = 0
    if not key or n < 1:
        raise argparse.ArgumentTypeError("expected KEY=LEN (LEN >= 1)")
    return key, n


# Built-in values of the options a profile may set (None on the command line: not given).
DEFAULTS = {
    "uid_mode": "sha1", "no_top": False, "apop_greeting": False, "retr_reply": "octets",
    "utf8": False, "utf8_rewrite": False, "x_uidl": False, "grow_at_quit": False,
    "capa_extra": [], "implementation": "fakepop3d", "no_capa": False,
    "drop_after_login": False,
}

# --profile NAME: what a real server does that matters to a client's UID journal.
PROFILES = {
    "dovecot": {},
    # popa3d 1.0.3: UIDL is a hash of some header lines; no CAPA; RETR answers a bare +OK.
    "popa3d": {"uid_mode": "headers", "no_capa": True, "retr_reply": "plain"},
    # solid-pop3d 0.15: header-hash UIDs, no CAPA, an APOP timestamp in the greeting.
    "solid": {"uid_mode": "headers", "no_capa": True, "apop_greeting": True},
    # Courier 1.0.16: UTF8 (RFC 6856); messages with UTF-8 headers rewritten for others.
    "courier": {"utf8_rewrite": True, "retr_reply": "follow",
                "implementation": "Courier Mail Server"},
    # GNU Mailutils 3.15: X-UIDL in what it serves, headers added to kept messages at QUIT,
    # "EXPIRENEVER" (no space) in CAPA.
    "mailutils": {"x_uidl": True, "grow_at_quit": True, "capa_extra": ["EXPIRENEVER"],
                  "implementation": "GNU Mailutils 3.15"},
}
PROFILES["courier-drop"] = dict(PROFILES["courier"], drop_after_login=True)
PROFILES["solid-pop3d"] = PROFILES["solid"]
PROFILES["courier-pop"] = PROFILES["courier"]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fakepop3d.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--maildir", metavar="DIR")
    g.add_argument("--generate", type=parse_generate, metavar="N[:SIZE]")
    p.add_argument("--user", default="test")
    p.add_argument("--password", default="secret")
    p.add_argument("--profile", choices=sorted(PROFILES), metavar="NAME")
    p.add_argument("--uid-mode", choices=("sha1", "number", "msgnum", "headers"))
    p.add_argument("--uid-len", type=parse_uid_len, action="append", default=[],
                   metavar="KEY=LEN")
    p.add_argument("--no-top", action="store_true", default=None)
    p.add_argument("--apop-greeting", action="store_true", default=None)
    p.add_argument("--apop", action="store_true")
    p.add_argument("--sasl", action="append", default=[], metavar="MECH")
    p.add_argument("--no-user", action="store_true")
    p.add_argument("--token", action="append", default=[], metavar="T")
    p.add_argument("--token-file", metavar="FILE")
    p.add_argument("--oauth-fail", choices=("challenge", "err"), default="challenge")
    p.add_argument("--oauth-count-file", metavar="FILE")
    p.add_argument("--capa-silent", action="store_true")
    p.add_argument("--retr-reply", choices=("octets", "follow", "plain"))
    p.add_argument("--utf8", action="store_true", default=None)
    p.add_argument("--utf8-rewrite", action="store_true", default=None)
    p.add_argument("--x-uidl", action="store_true", default=None)
    p.add_argument("--grow-at-quit", action="store_true", default=None)
    p.add_argument("--capa-extra", action="append", metavar="LINE")
    p.add_argument("--implementation", metavar="TEXT")
    p.add_argument("--no-capa", action="store_true", default=None)
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--no-uidl", action="store_true")
    p.add_argument("--expire0", action="store_true")
    p.add_argument("--expire0-enforce", action="store_true")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--stls", nargs=2, metavar=("CERT", "KEY"))
    t.add_argument("--ssl", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--latency", type=float, default=0.0, metavar="MS")
    p.add_argument("--max-sessions", type=int, default=0, metavar="N")
    p.add_argument("--lifetime", type=float, default=600.0, metavar="SECONDS")
    p.add_argument("--record", metavar="FILE")
    p.add_argument("--port-file", metavar="FILE")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--fault-sessions", type=parse_sessions, default={1}, metavar="LIST")
    p.add_argument("--drop-after-bytes", type=int, metavar="K")
    p.add_argument("--stall-after-bytes", type=int, metavar="K")
    for name in ("--err-on-retr", "--err-on-dele", "--drop-reply", "--dup-reply",
                 "--garbage-after", "--truncate-retr"):
        p.add_argument(name, type=int, action="append", default=[], metavar="N")
    p.add_argument("--garbage-text", default="*** fakepop3d garbage ***")
    p.add_argument("--no-greeting", action="store_true")
    p.add_argument("--greeting-text", metavar="TEXT")
    p.add_argument("--close-after-pass", action="store_true")
    p.add_argument("--drop-after-login", action="store_const", const=True, default=None)
    p.add_argument("--drop-after-login-count", type=int, metavar="N", default=None,
                   help="with --drop-after-login: lose only the first N commands")
    p.add_argument("--drop-at-quit", action="store_true")
    p.add_argument("--hold-after-bytes", type=int, metavar="K")
    p.add_argument("--hold-until", metavar="FILE")
    p.add_argument("--drip", choices=("greeting", "status", "body"))
    p.add_argument("--drip-interval", type=float, default=0.5, metavar="S")
    p.add_argument("--drip-cmd", default="RETR", metavar="WORD")
    p.add_argument("--body-rate", type=int, default=0, metavar="BPS")
    o = p.parse_args(argv)
    # A profile fills in what the command line left unset; built-in defaults fill the rest.
    prof = PROFILES[o.profile] if o.profile else {}
    for name, default in DEFAULTS.items():
        if getattr(o, name) is None:
            setattr(o, name, prof.get(name, default))
    if o.utf8_rewrite:
        o.utf8 = True
    mechs = []
    for m in o.sasl:
        for name in m.split(","):
            name = name.strip().upper()
            if name not in SASL_MECHS:
                p.error("--sasl %s: one of %s" % (name, ", ".join(SASL_MECHS)))
            if name not in mechs:
                mechs.append(name)
    o.sasl = mechs
    o.uid_len = dict(o.uid_len)
    if (o.hold_after_bytes is None) != (o.hold_until is None):
        p.error("--hold-after-bytes and --hold-until go together")
    if o.lifetime <= 0:
        p.error("--lifetime must be positive")
    if o.latency < 0:
        p.error("--latency must not be negative")
    if o.maildir and not os.path.isdir(o.maildir):
        p.error("--maildir %s: not a directory" % o.maildir)
    return o


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        srv = Server(opts)
    except (OSError, ssl.SSLError) as e:
        log("cannot start: %s" % e)
        return 1
    try:
        asyncio.run(srv.main())
    except OSError as e:
        log("cannot listen: %s" % e)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
