"""``python -m enginehouse.runtime``: start one replica.

Exit codes: 3 when the model (or the configuration) cannot be loaded; 4 when the address cannot
be listened on. Either way the last line on stderr is ``ENGINEHOUSE_REPLICA_ERROR: <reason>``,
which the control plane shows the user.

The replica's secret comes in the environment (``ENGINEHOUSE_REPLICA_SECRET``), never on the
command line (which every user of the machine sees in ``ps``). Without one the replica does not
start unless ``--insecure`` says so: a replica that answers anyone is a choice, never the result
of a variable that went missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from enginehouse.replicaauth import SECRET_ENV
from enginehouse.requestlimits import RequestLimits

if TYPE_CHECKING:
    from enginehouse.runtime.artifacts import ArtifactFetcher

EXIT_LOAD_FAILED = 3
EXIT_LISTEN_FAILED = 4
EXIT_FETCH_FAILED = 5  # the server's files could not be fetched now; another try may
ERROR_PREFIX = "ENGINEHOUSE_REPLICA_ERROR: "

log = logging.getLogger("enginehouse.runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m enginehouse.runtime", description="Run one model replica.")
    parser.add_argument("--task-type", required=True)
    parser.add_argument("--base-model", required=True, help="local directory or Hugging Face Hub id")
    parser.add_argument("--served-name", default=None, help="the model name clients use for the base model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--runtime-options", default=None, help="JSON object, e.g. '{\"max_loras\": 4}'")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--log-level", default="info")
    # The server passes its own request limits (ENGINEHOUSE_MAX_REQUEST_BODY_BYTES, _MAX_JSON_DEPTH).
    parser.add_argument("--max-body-bytes", type=int, default=None, help="largest request body read")
    parser.add_argument("--max-json-depth", type=int, default=None, help="deepest JSON nesting accepted")
    # Lets the control plane recognise its replica among the machine's processes after a restart.
    parser.add_argument("--replica-id", default=None, help="the control plane's id for this replica")
    parser.add_argument("--insecure", action="store_true",
                        help=f"serve without a secret when {SECRET_ENV} is not set: anyone who can reach "
                             "the port may call the replica (debugging by hand only)")
    return parser


def fail(message: str, code: int) -> int:
    print(ERROR_PREFIX + " ".join(message.split()), file=sys.stderr, flush=True)
    return code


def take_secret(insecure: bool) -> tuple[str | None, str | None]:
    """(the secret, None), or (None, why the replica must not start). Taken out of the environment
    so that nothing this process starts inherits it."""
    secret = os.environ.pop(SECRET_ENV, "")
    if secret:
        return secret, None
    if insecure:
        return None, None
    return None, (f"{SECRET_ENV} is not set: a replica answers only callers that send its secret "
                  "(pass --insecure to serve without one)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    secret, refusal = take_secret(args.insecure)
    if refusal is not None:  # before torch is imported: the answer comes at once
        return fail(refusal, EXIT_LOAD_FAILED)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Imported here so that --help and argument errors answer without loading torch.
    import torch
    import transformers

    from enginehouse.runtime.artifacts import ArtifactFetcher, ArtifactFetchError
    from enginehouse.runtime.base import ReplicaLoadError
    from enginehouse.runtime.options import RuntimeOptionsError, parse_runtime_options
    from enginehouse.runtime.runners import RUNNERS

    transformers.utils.logging.disable_progress_bar()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    runner_cls = RUNNERS.get(args.task_type)
    if runner_cls is None:
        supported = ", ".join(sorted(RUNNERS))
        message = f"task type '{args.task_type}' is not supported by this replica (supported: {supported})"
        return fail(message, EXIT_LOAD_FAILED)
    fetcher = ArtifactFetcher.from_environment(secret)
    try:
        options = parse_runtime_options(args.runtime_options)
        served_name = args.served_name or args.base_model.rstrip("/").split("/")[-1]
        base_model = fetcher.resolve(args.base_model) if fetcher else args.base_model
        runner = runner_cls(base_model=base_model, served_name=served_name, options=options)
        load_on_passing_thread(runner)
    except ArtifactFetchError as exc:
        if exc.permanent:
            return fail(str(exc), EXIT_LOAD_FAILED)
        log.error("%s", exc)  # not declared: the next replica may reach the server
        return EXIT_FETCH_FAILED
    except (RuntimeOptionsError, ReplicaLoadError) as exc:
        return fail(str(exc), EXIT_LOAD_FAILED)
    except Exception as exc:  # anything else while loading is still the user's model failing
        log.exception("loading failed")
        return fail(f"could not load base model '{args.base_model}': {exc}", EXIT_LOAD_FAILED)
    if secret is None:
        log.warning("serving without a secret (--insecure): anyone who can reach port %d may call it", args.port)
    return serve(runner, args.host, args.port, args.log_level, _limits(args), secret, fetcher)


def load_on_passing_thread(runner: object) -> None:
    """``runner.load()`` on a thread that ends with it, raising what it raised.

    Loading runs torch's parallel ops, and GNU OpenMP keeps a pool of worker threads for each
    thread that runs them, for as long as that thread lives. While a process holds more OpenMP
    threads than CPUs, libgomp stops spinning its idle workers and puts them to sleep at once,
    so every op of the engine thread then waits for a sleeping worker to wake: a 5M model's
    steps took about twice as long. Loading on the main thread left its pool beside the engine
    thread's for the replica's life; a thread that ends takes its pool with it."""
    import threading

    failure: list[BaseException] = []

    def load() -> None:
        try:
            runner.load()  # type: ignore[attr-defined]
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=load, name="replica-load")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _limits(args: argparse.Namespace) -> RequestLimits:
    default = RequestLimits.default()
    return RequestLimits(args.max_body_bytes or default.max_body_bytes,
                         args.max_json_depth or default.max_json_depth)


def serve(runner: object, host: str, port: int, log_level: str, limits: RequestLimits | None = None,
          secret: str | None = None, fetcher: ArtifactFetcher | None = None) -> int:
    import uvicorn

    from enginehouse.runtime.server import create_app

    try:
        sock = _bind(host, port)
    except OSError as exc:
        return fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_LISTEN_FAILED)
    app = create_app(runner, limits, secret, fetcher)  # type: ignore[arg-type]
    # log_config=None: uvicorn's loggers propagate to ours, so everything goes to stderr.
    config = uvicorn.Config(app, log_config=None, log_level=log_level, timeout_graceful_shutdown=5)
    log.info("serving %s on http://%s:%d", getattr(runner, "served_name", "?"), host, port)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose protocol says TCP;
    # without it a reply's body waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
