"""A stand-in policy server for the client's tests and drill: the wire format without a model.

    python tests/inference/fake_policy_server.py PORT   # 0: any free port

It runs as its own process so that a test can SIGKILL it mid-request or SIGSTOP it, as happens to
a real server; it starts in well under a second (no JAX, no checkpoint to compile). It prints
``listening <port>`` when ready and ``request <n>`` as each request arrives. On connect it sends
``{"metadata": {"limits": {}, "pid": <its pid>}}``; a request whose `instruction` is a number of
seconds is answered after that long with ``{"actions": float32[4, 7] full of that number,
"latency_ms": ...}``, so a test can tell which request a reply belongs to.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

STARTUP_S = 30.0  # generous: two cores shared by parallel test runs


def _serve(port: int) -> None:
    from octo_like_client.wire import packb, unpackb
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.server import serve

    count = 0

    def handler(connection) -> None:
        nonlocal count
        connection.send(packb({"metadata": {"limits": {}, "pid": os.getpid()}}))
        for message in connection:
            count += 1
            print(f"request {count}", flush=True)
            request = unpackb(message)
            seconds = float(request.get("instruction") or 0.0)
            time.sleep(seconds)
            actions = np.full((4, 7), seconds, np.float32)
            try:
                connection.send(packb({"actions": actions, "latency_ms": seconds * 1e3}))
            except ConnectionClosed:  # the client gave up waiting (its timeout) and left
                return

    with serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
        print(f"listening {server.socket.getsockname()[1]}", flush=True)
        server.serve_forever()


def thread_states(pid: int) -> list[str]:
    """The scheduler state letter of each thread of process `pid` (Linux /proc: 'T' stopped)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/stat"
        with contextlib.suppress(FileNotFoundError), open(path) as stat:  # a thread may end
            states.append(stat.read().rpartition(")")[2].split()[0])
    return states


class FakeServer:
    """The server process: `port`, `pid`, and the signals a test sends it."""

    def __init__(self, port: int = 0):
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        # A thread reads the lines: select() on the pipe misses lines already read into the
        # file object's buffer (two lines arriving together: the second was never seen).
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read_lines, daemon=True)
        self._reader.start()
        line = self.next_line(STARTUP_S)
        if not line.startswith("listening "):
            self.kill()
            raise RuntimeError(f"fake policy server did not start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_lines(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def next_line(self, timeout: float) -> str:
        """The server's next stdout line ('' if none comes within `timeout` seconds)."""
        try:
            return self._lines.get(timeout=timeout) if timeout > 0 else self._lines.get_nowait()
        except queue.Empty:
            return ""

    def wait_for_request(self, number: int, timeout: float = 10.0) -> None:
        """Returns once the server has received its `number`-th request (1 is the first)."""
        deadline = time.monotonic() + timeout
        while (line := self.next_line(max(deadline - time.monotonic(), 0))) != f"request {number}":
            assert line.startswith("request"), f"the fake server saw no request {number}: {line!r}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGSTOP, returning once every thread of the server is stopped. The signal is
        delivered asynchronously: on a loaded machine the server answered one more request
        after `os.kill` had returned (CI at 6a71bc5: "DID NOT RAISE PolicyServerTimeout")."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not all(state == "T" for state in thread_states(self.pid)):
            assert time.monotonic() < deadline, f"the fake server (pid {self.pid}) did not stop"
            time.sleep(0.005)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: stopped or not
        self.process.wait(10)
        self._reader.join(10)  # the pipe's end: the dead process's last lines are read
        self.process.stdout.close()


@contextlib.contextmanager
def fake_server(port: int = 0) -> Iterator[FakeServer]:
    server = FakeServer(port)
    try:
        yield server
    finally:
        server.kill()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
