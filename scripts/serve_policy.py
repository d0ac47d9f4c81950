"""Serve a checkpoint as a policy over websockets (msgpack-numpy), e.g. on the robot's network.

    python scripts/serve_policy.py --checkpoint runs/laptop/checkpoints --port 8000
    python scripts/serve_policy.py --checkpoint ckpts --host 0.0.0.0 --port 8000 \
        --dataset_name bridge_dataset --execution ensemble --ensemble_decay 0.0

The model is loaded and compiled before the server accepts connections. Health check:
``curl http://HOST:PORT/healthz``. Client: `octo_like.inference.server.PolicyClient`; the
protocol is described in `octo_like/inference/server.py`.
"""

from __future__ import annotations

import argparse
import logging


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from octo_like.inference.cli import add_policy_arguments

    parser.add_argument("--checkpoint", required=True, help="directory holding <step>/ dirs")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="seeds the diffusion noise")
    add_policy_arguments(parser)
    return parser.parse_args(argv)


def build_server(args: argparse.Namespace):
    from octo_like.inference.cli import policy_from_args
    from octo_like.inference.server import PolicyServer

    policy = policy_from_args(args)
    logging.info("loaded and compiled in %.0f ms: %s", policy.warmup_ms, policy.metadata())
    return PolicyServer(policy, args.host, args.port)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    build_server(parse_args(argv)).serve_forever()


if __name__ == "__main__":
    main()
