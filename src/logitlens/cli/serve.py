"""``logitlens serve``: load models once and explore them in a local web page (see ``logitlens.web``).

logitlens serve                                   # the default model on http://127.0.0.1:8000/
logitlens serve --model gpt2 --model default --tuned-lens lenses/gpt2 --open
logitlens serve results.parquet                   # only shows saved results: no model is loaded
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from logitlens.cli.common import add_model_args, add_model_option, load
from logitlens.errors import LogitLensError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``logitlens`` sub-commands; returns its parser."""
    p = subparsers.add_parser("serve", help="a local web viewer and JSON API over models loaded once")
    p.add_argument(
        "files", nargs="*", metavar="FILE", help="saved results (.json / .parquet) to open in the page"
    )
    add_model_option(p, several="repeat it to serve several (default: the default model, none with FILEs)")
    add_model_args(p)
    p.add_argument(
        "--tuned-lens",
        action="append",
        default=[],
        metavar="DIR",
        help="a tuned lens folder, offered with every model it fits (repeatable)",
    )
    p.add_argument(
        "--no-lens-check", action="store_true", help="accept a tuned lens whose unembedding hash differs"
    )
    p.add_argument("--memory-budget", type=int, default=512, help="MB per decoding chunk (default 512)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback; others need the token)"
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--token", help="the token every request needs (generated when binding beyond loopback)")
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    p.add_argument(
        "--max-tokens", type=int, default=512, help="tokens per prompt a request may send (default 512)"
    )
    p.add_argument("--queue", type=int, default=8, help="requests waiting per model before 503 (default 8)")
    p.set_defaults(func=run)
    return p


def _check(args) -> None:
    for path in args.files:
        if Path(path).suffix.lower() not in (".json", ".parquet"):
            raise LogitLensError(
                f"cannot open {path}: give .json or .parquet files written by LensResult.save"
            )
        if not Path(path).is_file():
            raise LogitLensError(f"cannot open {path}: no such file")
    for what, value, low in (
        ("--port", args.port, 0),
        ("--max-tokens", args.max_tokens, 1),
        ("--queue", args.queue, 1),
    ):
        if value < low or (what == "--port" and value > 65535):
            raise LogitLensError(f"{what} must be at least {low}, got {value}")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise LogitLensError(
            f"logitlens serve needs {exc.name}: pip install fastapi uvicorn python-multipart"
        ) from None


def run(args) -> int:
    """Load the models, build the app, print the URL and serve until Ctrl-C (exit 130, one line)."""
    _check(args)
    from logitlens import TunedLens
    from logitlens.web import ServeConfig, create_app, prepare, serve
    from logitlens.web.server import free_port

    names = args.model or ([] if args.files else ["default"])
    tuned = {Path(d).name or str(d): TunedLens.load(d) for d in args.tuned_lens}
    models = []
    for name in names:
        print(f"logitlens: loading {name}…", file=sys.stderr, flush=True)
        models.append(load(name, args))
    port = args.port or free_port(args.host)
    config = ServeConfig(
        host=args.host,
        port=port,
        token=args.token,
        max_prompt_tokens=args.max_tokens,
        queue_size=args.queue,
        check_lens_hash=not args.no_lens_check,
    )
    config, warnings = prepare(config)
    for line in warnings:
        print(f"logitlens: {line}", file=sys.stderr)
    app = create_app(models, tuned_lenses=tuned, files=args.files, config=config)
    serve(app, config, open_browser=args.open)
    return 0
