#!/usr/bin/env python3
"""What deleting acknowledged ingest entries costs Redis: `XDEL` of 100 ids per call against
`XTRIM … MINID ~` per 100 entries, on a stream of 200,000 entries of 300 bytes, Redis' time per
entry from `INFO commandstats` (docs/PERFORMANCE.md). Starts its own redis-server on a free
port; needs only redis-server on PATH.

    python3 loadtest/xdel_cost.py [ROUNDS]
"""

import socket
import subprocess
import sys
import time

N, BATCH, PIPELINE = 200_000, 100, 50


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def reply(self):
        line = self.f.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def pipeline(self, commands):
        self.s.sendall(b"".join(resp(*c) for c in commands))
        return [self.reply() for _ in commands]

    def call(self, *args):
        return self.pipeline([args])[0]


def usec(c, command):
    for line in c.call("INFO", "commandstats").decode().splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("usec=")[1].split(",")[0])
    return 0


def fill(c):
    c.call("FLUSHALL")
    value = b"x" * 300
    ids = []
    for i in range(0, N, 1000):
        ids += c.pipeline([("XADD", "s", "*", "p", value)] * min(1000, N - i))
    c.call("CONFIG", "RESETSTAT")
    return ids


def run(c, commands):
    for i in range(0, len(commands), PIPELINE):
        c.pipeline(commands[i : i + PIPELINE])


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        c = Conn(port)
        for r in range(1, rounds + 1):
            ids = fill(c)
            run(c, [("XDEL", "s", *ids[i : i + BATCH]) for i in range(0, N, BATCH)])
            xdel = usec(c, "xdel") / N
            ids = fill(c)
            run(c, [("XTRIM", "s", "MINID", "~", ids[min(i + BATCH, N - 1)]) for i in range(0, N, BATCH)])
            xtrim = usec(c, "xtrim") / N
            print(f"round {r}: XDEL {xdel:.2f} µs per entry, XTRIM MINID ~ {xtrim:.3f} µs per entry")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
