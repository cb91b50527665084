"""Remote execution on NDIF: the API key, a fast check before a request, request sizes, and the
allow-list that code entering a remote trace must respect (enforced in tests by a simulated server).

- ``api_key()``: ``NDIF_API_KEY``, else nnsight's configuration (``nnsight login`` writes it). Never
  printed, logged or written by logitlens.
- ``require_ndif(remote)``: before any remote request, fail at once (within ``PREFLIGHT_SECONDS``) with one
  line saying what is missing: nnsight, the key, or a reachable server.
- ``request_groups``: prompts per request, at most ``MAX_REQUEST_TOKENS`` padded input tokens each, so that
  one request stays far inside the service's one-hour limit (see the constant's note).
- ``ndif_allow_list()`` / ``import_guard()``: while active, ``remote="local"`` runs through
  ``SimulatedServer``, a stricter stand-in for NDIF than nnsight's own simulation: it deserializes the
  request and runs the *shipped* code (not the caller's objects), and any import that code makes, or asks
  the unpickler to make, outside NDIF's allowed modules raises "Module X is not whitelisted", as the
  server does. It also measures the bytes that come back.
"""

from __future__ import annotations

import builtins
import io
import os
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlparse

from logitlens.errors import LogitLensError

__all__ = [
    "DESERIALIZATION_MODULES",
    "MAX_REQUEST_TOKENS",
    "NDIF_MODULES",
    "SimulatedServer",
    "api_key",
    "import_guard",
    "ndif_allow_list",
    "request_groups",
    "require_ndif",
    "require_nnsight",
]

INSTALL_HINT = "pip install 'logitlens[remote]'"
PREFLIGHT_SECONDS = 3.0  # a missing key fails at once; an unreachable server within this

# Padded input tokens (prompts x longest prompt) per NDIF request. NDIF stops a request after one hour,
# and the server holds the captured rows of a request at once. Both stay small at this bound: for
# Llama-3.1-70B (81 rows, d = 8192, 128,256 tokens) the lens decodes ~170 GFLOP per position, so 4096
# positions are ~0.7 PFLOP (minutes on the server's GPUs, even shared), and their rows are 4096 x 81 x
# 8192 bf16 = 5.4 GB. Lower it (``max_request_tokens``) for a busy service; a single prompt longer than
# the bound still goes alone in one request.
MAX_REQUEST_TOKENS = 4096

# What code inside a trace may import on NDIF (a conservative reading of the server's allow-list):
# name -> whether its submodules are allowed too.
NDIF_MODULES: dict[str, bool] = {
    "builtins": False,
    "torch": True,
    "numpy": True,
    "einops": True,
    "collections": True,
    "math": True,
    "typing": True,
    "operator": False,
    "_operator": False,
}
# What the server's unpickler may import besides while it rebuilds a request (nnsight's own classes).
DESERIALIZATION_MODULES: dict[str, bool] = {
    "pickle": True,
    "_pickle": False,
    "copyreg": False,
    "cloudpickle": True,
    "nnsight": True,
}
# Packages installed on the server: their own internal imports are theirs, not the request's.
SERVER_PACKAGES = frozenset(
    {"torch", "numpy", "transformers", "accelerate", "diffusers", "einops", "peft", "nnsight", "safetensors",
     "tokenizers", "huggingface_hub", "sympy", "networkx", "jinja2", "filelock", "fsspec", "packaging",
     "yaml", "regex", "tqdm", "greenlet", "pydantic", "pydantic_core", "zstandard"}
)  # fmt: skip
# Callers whose imports are what the payload asks for: the unpickler rebuilding it.
_UNPICKLERS = frozenset({"nnsight.intervention.serialization", "pickle", "copyreg"})


# ---- nnsight and the API key --------------------------------------------------------------------------
def require_nnsight():
    """The nnsight module, or a one-line LogitLensError saying how to install it."""
    try:
        import nnsight
    except ImportError:
        raise LogitLensError(f"the nnsight backend and remote runs need nnsight: {INSTALL_HINT}") from None
    return nnsight


def api_key() -> str | None:
    """The NDIF API key: ``NDIF_API_KEY``, else nnsight's configuration; None when there is none."""
    key = os.environ.get("NDIF_API_KEY")
    if key:
        return key
    try:
        from nnsight.schema.config import CONFIG
    except ImportError:
        return None
    return CONFIG.API.APIKEY or None


def ndif_host(remote: bool | str = True) -> str:
    """The NDIF server a remote run talks to: a URL given as ``remote``, else ``NDIF_HOST`` or nnsight's."""
    if isinstance(remote, str) and remote.startswith(("http://", "https://")):
        return remote
    if os.environ.get("NDIF_HOST"):
        return os.environ["NDIF_HOST"]
    try:
        from nnsight.schema.config import CONFIG
    except ImportError:
        return "https://api.ndif.us"
    return CONFIG.API.HOST


def require_ndif(remote: bool | str = True, timeout: float = PREFLIGHT_SECONDS) -> None:
    """Check, before a request, that nnsight is installed, a key is configured and the server answers a
    TCP connection; raise a one-line LogitLensError naming what is missing (never the key itself)."""
    require_nnsight()
    if not api_key():
        raise LogitLensError(
            "remote=True needs an NDIF API key and none is set: export NDIF_API_KEY=... or run "
            "`nnsight login` (keys: https://login.ndif.us); remote='local' runs the same trace here"
        )
    host = ndif_host(remote)
    url = urlparse(host)
    port = url.port or (443 if url.scheme == "https" else 80)
    error: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    worker = threading.Thread(target=connect, daemon=True)  # name resolution has no timeout of its own
    worker.start()
    worker.join(timeout)
    if worker.is_alive() or error:
        why = f"{type(error[0]).__name__}: {error[0]}" if error else f"no answer within {timeout:g} s"
        raise LogitLensError(
            f"cannot reach NDIF at {host} ({why}); check the network (or NDIF_HOST), or run "
            "remote='local' to simulate the request here"
        )


def request_groups(lengths: Sequence[int], max_tokens: int = MAX_REQUEST_TOKENS) -> list[list[int]]:
    """Split prompts (by their lengths, in the order given) into requests of at most ``max_tokens``
    padded tokens (count x longest); a prompt longer than the bound goes alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if current and (len(current) + 1) * max(longest, n) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, n)
    if current:
        groups.append(current)
    return groups


# ---- the allow-list ------------------------------------------------------------------------------------
def _allowed(name: str, modules: dict[str, bool]) -> bool:
    return any(name == mod or (subs and name.startswith(mod + ".")) for mod, subs in modules.items())


def _resolve(name: str, globals: dict | None, level: int) -> str:
    if level == 0:
        return name
    package = (globals or {}).get("__package__") or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{name}" if name else base


def _is_request_code(globals: dict | None) -> bool:
    """Whether an import comes from code of the request (shipped by value, the traced block, a module
    the server does not have) or from the unpickler rebuilding it, rather than from a library's insides."""
    name = (globals or {}).get("__name__")
    if not isinstance(name, str):
        return True  # functions rebuilt from source and the traced block carry no module name
    root = name.partition(".")[0]
    if name in _UNPICKLERS or root == "cloudpickle":
        return True
    return root not in SERVER_PACKAGES and root not in sys.stdlib_module_names


class _GuardState(threading.local):
    modules: dict[str, bool] | None = None
    depth = 0  # inside an allowed import: its own imports are its business, as on the server
    seen: list[str]

    def __init__(self) -> None:
        self.seen = []


_STATE = _GuardState()
_ORIGINAL_IMPORT = builtins.__import__


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    state = _STATE
    if state.modules is None or state.depth or not _is_request_code(globals):
        return _ORIGINAL_IMPORT(name, globals, locals, fromlist, level)
    full = _resolve(name, globals, level)
    state.seen.append(full)
    if not _allowed(full, state.modules):
        raise ImportError(
            f"Module {full} is not whitelisted (NDIF allows: {', '.join(sorted(NDIF_MODULES))}); code "
            "inside a remote trace may import only those"
        )
    state.depth += 1
    try:
        return _ORIGINAL_IMPORT(name, globals, locals, fromlist, level)
    finally:
        state.depth -= 1


@contextmanager
def import_guard(modules: dict[str, bool] | None = None) -> Iterator[list[str]]:
    """While active, an import made by request code (see ``_is_request_code``) outside ``modules``
    (default: ``NDIF_MODULES``) raises ImportError "Module X is not whitelisted". Yields the list of the
    modules request code imported. Not reentrant across threads: the import hook is process-wide."""
    state = _STATE
    previous, previous_seen = state.modules, state.seen
    state.modules = dict(NDIF_MODULES if modules is None else modules)
    state.seen = []
    installed = builtins.__import__ is not _guarded_import
    if installed:
        builtins.__import__ = _guarded_import
    try:
        yield state.seen
    finally:
        if installed:
            builtins.__import__ = _ORIGINAL_IMPORT
        state.modules, state.seen = previous, previous_seen


class SimulatedServer:
    """An nnsight backend that plays NDIF's part in this process, under the allow-list.

    Serializes the trace as nnsight's RemoteBackend does, rebuilds it with only ``NDIF_MODULES`` and
    ``DESERIALIZATION_MODULES`` importable by the unpickler, runs the rebuilt (shipped) code with only
    ``NDIF_MODULES`` importable by it, and sends the saved values back through ``torch.save`` /
    ``torch.load`` as the server does. ``payload_bytes`` / ``result_bytes``: the sizes of the last
    request and of what came back.
    """

    def __init__(self, model) -> None:
        self.model = model  # the nnsight model: its modules resolve the request's persistent ids
        self.payload_bytes = 0
        self.result_bytes = 0
        self.imported: list[str] = []

    def __call__(self, tracer) -> None:
        import linecache

        import torch
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel
        from nnsight.tracing.util import push

        if not getattr(self.model, "dispatched", True):
            self.model.dispatch()  # the server holds the weights; here they load now
        pull_env()
        blob = RequestModel.serialize(tracer, compress=False)
        self.payload_bytes = len(blob)
        filename = tracer.info.frame.f_code.co_filename
        saved_line = linecache.cache.get(filename)
        try:
            with import_guard({**NDIF_MODULES, **DESERIALIZATION_MODULES}) as seen:
                restored = RequestModel.deserialize(blob, self.model._remoteable_persistent_objects())
            self.imported = list(seen)
        finally:  # deserialize registers the block's source under the caller's file name: put it back
            if saved_line is not None:
                linecache.cache[filename] = saved_line
            else:
                linecache.cache.pop(filename, None)
        frame = restored.info.frame
        shipped = dict(frame.f_locals)
        with import_guard(NDIF_MODULES) as seen:
            restored.execute(restored.info.code)
        self.imported += seen
        saves = {k: v for k, v in frame.f_locals.items() if k not in shipped or shipped[k] is not v}
        buffer = io.BytesIO()
        torch.save(saves, buffer, pickle_protocol=4)
        self.result_bytes = buffer.tell()
        buffer.seek(0)
        push(tracer.info.frame, torch.load(buffer, map_location="cpu", weights_only=False))


@contextmanager
def ndif_allow_list() -> Iterator[list[SimulatedServer]]:
    """While active, ``remote="local"`` (nnsight's local simulation) runs through ``SimulatedServer``:
    the request is rebuilt and run under NDIF's allow-list. Yields the servers used, one per request.

    Example:
        >>> with ndif_allow_list() as servers:
        ...     res = lens.run(prompts, remote="local")
        >>> servers[-1].result_bytes
    """
    from nnsight.intervention.backends.local import LocalSimulationBackend

    servers: list[SimulatedServer] = []
    original = LocalSimulationBackend.__call__

    def call(self, tracer) -> None:
        server = SimulatedServer(self.model)
        servers.append(server)
        server(tracer)

    LocalSimulationBackend.__call__ = call
    try:
        yield servers
    finally:
        LocalSimulationBackend.__call__ = original
