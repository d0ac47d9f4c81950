"""Serve a checkpoint as a policy over websockets (msgpack-numpy), e.g. on the robot's network.

    python scripts/serve_policy.py --checkpoint runs/laptop/checkpoints --port 8000
    OCTO_POLICY_TOKEN=$(cat token.txt) python scripts/serve_policy.py --checkpoint ckpts \
        --host 0.0.0.0 --port 8000 --dataset_name bridge_dataset --max_batch 8

The model is loaded and compiled, for every batch bucket, before the server accepts
connections. Health check:
``curl http://HOST:PORT/healthz``. Client: `octo_like.inference.client.PolicyClient`; the
protocol and its limits are described in `octo_like/inference/server.py`. A shared-secret token
comes from --token_file or the OCTO_POLICY_TOKEN variable (never from the command line, which
other users of the machine can read); serving beyond 127.0.0.1 without one logs a warning.
"""

from __future__ import annotations

import argparse
import logging
import os


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from octo_like.inference.cli import add_policy_arguments, policy_argument_problems
    from octo_like.inference.server_limits import ServerLimits, limits_from_flags

    defaults = ServerLimits()
    parser.add_argument("--checkpoint", required=True, help="directory holding <step>/ dirs")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="seeds the diffusion noise")
    parser.add_argument(
        "--max_batch",
        type=int,
        default=defaults.max_batch,
        help="windows per request; batches are padded to 1, 2, 4, ... max_batch",
    )
    parser.add_argument("--min_image_side", type=int, default=defaults.min_image_side)
    parser.add_argument("--max_image_side", type=int, default=defaults.max_image_side)
    parser.add_argument("--max_request_mb", type=float, default=defaults.max_request_bytes / 2**20)
    parser.add_argument(
        "--max_queued",
        type=int,
        default=defaults.max_queued,
        help="requests waiting or running before clients are told 'busy'",
    )
    parser.add_argument(
        "--max_connections", type=int, default=defaults.max_connections,
        help="open connections at once; more are answered 503",
    )  # fmt: skip
    parser.add_argument(
        "--message_timeout_s", type=float, default=defaults.message_timeout_s,
        help="a message not completed within this closes its connection",
    )  # fmt: skip
    parser.add_argument(
        "--no_prewarm", action="store_true",
        help="do not compile every batch bucket before accepting clients",
    )  # fmt: skip
    parser.add_argument("--token_file", default=None, help="file holding the shared secret")
    add_policy_arguments(parser)
    args = parser.parse_args(argv)
    problems = policy_argument_problems(args)
    if not 0 <= args.port <= 65535:
        problems.append(f"--port must be in [0, 65535], got {args.port}")
    try:
        limits_from_flags(args)
    except ValueError as error:
        problems.append(str(error))
    if problems:  # before the checkpoint loads: usage and one line, exit status 2
        parser.error("; ".join(problems))
    return args


def read_token(args: argparse.Namespace, environ=os.environ) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as error:
            raise SystemExit(f"--token_file {args.token_file}: {error.strerror}") from None
        if not token:
            raise SystemExit(f"--token_file {args.token_file} is empty")
        return token
    return environ.get("OCTO_POLICY_TOKEN") or None


def build_server(args: argparse.Namespace, environ=os.environ):
    """The server of `args`: its flags, token and port are checked before the checkpoint
    loads and compiles (tens of seconds), so a port in use is named at once."""
    from octo_like.inference.cli import policy_from_args
    from octo_like.inference.server import PolicyServer
    from octo_like.inference.server_limits import limits_from_flags
    from octo_like.inference.server_socket import bind_server_socket

    limits = limits_from_flags(args)
    token = read_token(args, environ)
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.warning(
            "serving on %s without a token: anyone who reaches the port can drive the robot; "
            "set OCTO_POLICY_TOKEN or --token_file",
            args.host,
        )
    sock = bind_server_socket(args.host, args.port)
    try:
        policy = policy_from_args(args)
    except BaseException:
        sock.close()
        raise
    logging.info("loaded and compiled in %.0f ms: %s", policy.warmup_ms, policy.metadata())
    return PolicyServer(
        policy, args.host, args.port, limits=limits, token=token, prewarm=not args.no_prewarm,
        sock=sock,
    )  # fmt: skip


def main(argv=None) -> None:
    from octo_like.inference.server_socket import ServerStartError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        server = build_server(args)
    except ServerStartError as error:  # one line: the fix is a flag or another process
        raise SystemExit(f"serve_policy.py: {error}") from None
    server.serve_forever()


if __name__ == "__main__":
    main()
