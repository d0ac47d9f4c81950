"""Soak test of the policy server: many clients mixing valid and malformed requests.

    python scripts/soak_policy_server.py --checkpoint runs/laptop/checkpoints --clients 50 \
        --requests 20 --max_rss_growth_mb 500

Starts `serve_policy.py` on a free loopback port in its own process, then --clients threads
each send --requests requests: about 60% valid windows (batch 1-4, the checkpoint's cameras and
proprio, each client's cameras at one of three sizes) and 40% malformed ones (not msgpack, text
frames, a non-string instruction, 0x0 and 1x1 images, 3000 tiny images, unknown keys, batches
over the limit, huge instructions); some clients hang up with a request in flight. Busy answers
are retried after 50 ms (latency counts the retries). Samples the server's RSS every 0.2 s.
Beside them run the abusive clients: one sends requests of 300,000 unknown keys, one trickles
a message at 64 B/s (the server must close it after its --message_timeout_s), one sends
valid windows at a new image size every time, and one opens connections past the server's
--max_connections (the extra ones must be refused); and one well-behaved client sends one
valid window at a time throughout, whose latency is reported on its own.
Stops by itself; prints a table, then one JSON line; exits 1 if the server died, stopped
answering /healthz, a malformed request got anything but an error (or an error text longer
than 2,000 characters), a valid one got an error, the trickled connection stayed open, no
connection was refused past the limit, or its RSS grew by more than --max_rss_growth_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# The soak and its clients are test code (tests/inference/soak.py): run from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.inference import soak  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--malformed_fraction", type=float, default=0.4)
    parser.add_argument("--hangup_fraction", type=float, default=0.1, help="of clients")
    parser.add_argument("--max_queued", type=int, default=8)
    parser.add_argument("--retry_seconds", type=float, default=120.0, help="busy: retry until")
    parser.add_argument("--max_rss_growth_mb", type=float, default=500.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup_timeout", type=float, default=180.0)
    parser.add_argument("--message_timeout_s", type=float, default=3.0, help="the server's")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = soak.run_soak(args)
    print(soak.describe(summary, args.max_rss_growth_mb))
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
