"""Running the app: the address and token rules, the printed URL, uvicorn.

Loopback (127.0.0.1, ::1, localhost) is the default and needs no token unless one is given. Any other
address prints a warning and requires a token: ``--token``, or one generated here and printed with the URL,
as Jupyter does. Ctrl-C stops uvicorn gracefully; the ``KeyboardInterrupt`` it re-raises afterwards is the
caller's to turn into one line and exit 130.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sys
import threading
import time
from dataclasses import replace
from typing import TextIO

from .app import LOOPBACK, ServeConfig

__all__ = ["BackgroundServer", "free_port", "is_loopback", "prepare", "serve", "url"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can connect)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare(config: ServeConfig) -> tuple[ServeConfig, list[str]]:
    """The config to serve with (a token generated when bound beyond loopback without one) and the
    warnings to print."""
    if is_loopback(config.host):
        return config, []
    token = config.token or secrets.token_urlsafe(24)
    warning = (
        f"warning: serving on {config.host}, reachable from other machines; every request needs the token "
        "(anyone with the URL can run the loaded models)"
    )
    extra = set(config.extra_hosts)
    if config.host not in ("0.0.0.0", "::"):
        extra.add(config.host)
    return replace(config, token=token, extra_hosts=extra), [warning]


def url(config: ServeConfig, port: int | None = None) -> str:
    """The URL to open: with ``?token=`` when the server has one."""
    host = config.host
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    query = f"/?token={config.token}" if config.token else "/"
    return f"http://{host}:{port or config.port}{query}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free on ``host`` now (for tests and --port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def _uvicorn(app, config: ServeConfig):
    import uvicorn

    cfg = uvicorn.Config(
        app,
        host=config.host.strip("[]"),
        port=config.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return uvicorn.Server(cfg)


def serve(app, config: ServeConfig, *, open_browser: bool = False, out: TextIO | None = None) -> None:
    """Serve ``app`` until Ctrl-C (uvicorn re-raises it as KeyboardInterrupt once it has stopped); the URL
    is printed once the socket listens."""
    out = out or sys.stderr
    server = _uvicorn(app, config)
    link = url(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.02)
        print(f"logitlens: serving on {link}  (Ctrl-C stops it)", file=out, flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(link)

    threading.Thread(target=announce, name="logitlens-announce", daemon=True).start()
    server.run()


class BackgroundServer:
    """The app served from a thread (tests, notebooks): ``with BackgroundServer(app, config) as url: ...``;
    it stops when the block ends."""

    def __init__(self, app, config: ServeConfig):
        self.config = config
        self.server = _uvicorn(app, config)
        self.thread = threading.Thread(target=self.server.run, name="logitlens-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.config.host}:{self.config.port}")
            time.sleep(0.02)
        return url(self.config)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
