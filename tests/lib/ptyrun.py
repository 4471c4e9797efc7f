#!/usr/bin/env python3
"""ptyrun.py PROMPT ANSWER ARGV...: run ARGV on a new pseudo-terminal (its controlling
terminal and stdin/out/err); once the output matches the regular expression PROMPT, type
ANSWER and a newline (ANSWER "^C" types an interrupt character instead). Writes what the
terminal showed to stdout and exits with ARGV's status (128 + N for signal N). Bounded:
the child is killed after 30 s."""
import os, pty, re, select, signal, sys, time

prompt = re.compile(sys.argv[1].encode())
answer = b"\x03" if sys.argv[2] == "^C" else sys.argv[2].encode() + b"\n"
argv = sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
out, sent, deadline = b"", False, time.time() + 30
while True:
    left = deadline - time.time()
    if left <= 0:
        os.kill(pid, signal.SIGKILL)
        sys.stderr.write("ptyrun.py: timeout\n")
        break
    r, _, _ = select.select([fd], [], [], min(left, 0.5))
    if not r:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:  # EIO: the last holder of the slave side is gone
        break
    if not data:
        break
    out += data
    if not sent and prompt.search(out):
        os.write(fd, answer)
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
