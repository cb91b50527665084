"""The FastAPI app of ``logitlens serve``: the API over loaded models and held results, and the page.

``create_app(models, tuned_lenses=..., files=..., config=...)`` builds it; ``server.serve`` runs it. Models
are loaded by the caller (the CLI) and never by a request; a request never names a path (result files given
on the command line are opened by id, uploads by their bytes). Every error is a 4xx/5xx JSON
``{"detail": "one line"}``.

Endpoints (see ``/docs``):
    GET  /api/health, /api/models
    POST /api/run          -> the LensResult JSON (``save`` schema); header X-Result-Id names the held result
    POST /api/attribute    -> the direct logit attribution and its bar chart
    POST /api/open         (multipart upload of a .json / .parquet result) -> the held result's id
    GET  /api/files/{id}   a result file given on the command line
    GET  /api/results/{id}, /view, /pin, /compare, /download   views of a held result
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

import logitlens
from logitlens import LensResult, LogitLens, LogitLensError, TunedLens

from . import render
from .guard import Guard
from .queue import ModelWorker, QueueFull
from .schemas import (
    MAX_TOP_K,
    AttributeRequest,
    AttributeResponse,
    CompareResponse,
    ErrorResponse,
    HealthResponse,
    LensResultJSON,
    ModelsResponse,
    OpenResponse,
    PinResponse,
    RunRequest,
    ViewResponse,
)
from .store import Held, Origin, ResultStore

__all__ = ["LOOPBACK", "ServeConfig", "create_app", "load_result_bytes"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
LOGIT = "logit"  # the plain logit lens's name in the API
STATIC = resources.files("logitlens.web") / "static"
PAGE_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)
}
DOWNLOADS = {
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "png": "image/png",
    "html": "text/html; charset=utf-8",
}


@dataclass
class ServeConfig:
    """The server's settings; every limit is checked per request."""

    host: str = "127.0.0.1"  # the bound address: Host headers must name it (or a loopback alias)
    port: int = 8000
    token: str | None = None  # required on every request when set (always set beyond loopback)
    max_prompt_tokens: int = 512  # tokens per prompt
    max_prompts: int = 16  # prompts per run request
    queue_size: int = 8  # requests waiting per model before 503
    cache_size: int = 32  # results held (runs and opened files)
    max_body_bytes: int = 1 << 20  # JSON request bodies
    max_upload_bytes: int = 256 << 20  # uploaded result files
    extra_hosts: set[str] = field(default_factory=set)  # further names the server may be reached by
    check_lens_hash: bool = True  # a tuned lens must match a model's unembedding hash to be offered with it


@dataclass
class ModelEntry:
    """A loaded model, the lenses that fit it (``"logit"``: None) and its worker."""

    name: str
    lens: LogitLens
    lenses: dict[str, TunedLens | None]
    worker: ModelWorker

    def lens_named(self, name: str | None) -> TunedLens | None:
        """The lens object for a run (None: the logit lens); 404 for a name this model has not."""
        name = name or LOGIT
        if name not in self.lenses:
            raise HTTPException(
                404, f"unknown lens {name!r} for model {self.name!r}; choose one of: {', '.join(self.lenses)}"
            )
        return self.lenses[name]


class _ClientGone(Exception):
    """The client disconnected while its job waited: the job was taken out of the queue."""


# ---- state --------------------------------------------------------------------------------------------
class State:
    """What the app holds: the models with their workers, the command-line files and the result store."""

    def __init__(self, models, tuned_lenses, files, config: ServeConfig):
        self.config = config
        self.store = ResultStore(config.cache_size)
        self.models: dict[str, ModelEntry] = {}
        for lens in models:
            self._add_model(lens, tuned_lenses)
        unused = [n for n in tuned_lenses if not any(n in e.lenses for e in self.models.values())]
        if unused:
            raise LogitLensError(f"tuned lens {unused[0]!r} fits none of the loaded models")
        self.files: dict[str, Held] = {}
        for i, path in enumerate(files):
            self.files[f"file{i}"] = Held(f"file{i}", Path(path).stem, _load_file(Path(path)), None)

    def _add_model(self, lens: LogitLens, tuned_lenses: dict[str, TunedLens]) -> None:
        name = str(lens.name)
        while name in self.models:
            name = f"{lens.name}#{len(self.models) + 1}"
        lenses: dict[str, TunedLens | None] = {LOGIT: None}
        for lens_name, tuned in tuned_lenses.items():
            try:
                tuned.check(lens, check_hash=self.config.check_lens_hash)
            except LogitLensError:
                continue
            lenses[lens_name] = tuned
        worker = ModelWorker(name, self.config.queue_size)
        self.models[name] = ModelEntry(name, lens, lenses, worker)

    def model(self, name: str | None) -> ModelEntry:
        """The entry of a loaded model (None: the first); 404 otherwise."""
        if not self.models:
            raise HTTPException(404, "this server holds no model (it only shows saved results)")
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise HTTPException(404, f"unknown model {name!r}; loaded: {', '.join(self.models)}")
        return self.models[name]

    def held(self, result_id: str) -> Held:
        """A held result by id; 404 when unknown or pushed out of the cache."""
        held = self.files.get(result_id) or self.store.get(result_id)
        if held is None:
            raise HTTPException(
                404, f"no result {result_id!r} here (unknown, or dropped from the cache): run it again"
            )
        return held

    def close(self) -> None:
        for entry in self.models.values():
            entry.worker.close()


# ---- results from bytes and files ---------------------------------------------------------------------
def load_result_bytes(data: bytes, filename: str = "") -> LensResult:
    """A result from an uploaded file's bytes: Parquet (by magic or suffix) or the JSON schema."""
    if not data:
        raise LogitLensError(
            "the uploaded file is empty: give a .json or .parquet file written by LensResult.save"
        )
    if data[:4] == b"PAR1" or filename.lower().endswith(".parquet"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.parquet"
            path.write_bytes(data)
            return _load_file(path)
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LogitLensError(
            f"the uploaded file is not a logitlens result: it is neither Parquet nor JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(parsed, dict):
        raise LogitLensError("the uploaded file is not a logitlens result: its JSON is not an object")
    return _in_input_order(LensResult.from_dict(parsed))


def _in_input_order(res: LensResult) -> LensResult:
    """A streamed run's prompts in the order they were given (the file has them in batch order)."""
    order = sorted(range(res.n_prompts), key=res.prompt_index.__getitem__)
    return res if order == list(range(res.n_prompts)) else res.select(order)


def _load_file(path: Path) -> LensResult:
    """``LensResult.load`` in input order, with any reader's failure made one LogitLensError line."""
    try:
        return _in_input_order(LensResult.load(path))
    except LogitLensError:
        raise
    except Exception as exc:  # pyarrow, json, numpy: a damaged file is a bad input, never a crash
        raise LogitLensError(
            f"not a logitlens result ({path.name}): {type(exc).__name__}: {_first(exc)}"
        ) from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- running in a model's queue ------------------------------------------------------------------------
async def in_queue(entry: ModelEntry, fn: Callable[[], Any], request: Request) -> Any:
    """Run ``fn`` on the model's worker; 503 when its queue is full; a client that leaves while its job
    waits takes the job out of the queue."""
    try:
        job = entry.worker.submit(fn)
    except QueueFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=0.05)
        if done:
            return future.result()
        if await request.is_disconnected():
            job.cancel()
            raise _ClientGone


def _targets(lens: LogitLens, req: RunRequest) -> list:
    """The request's targets and concepts, as ``run`` takes them."""
    targets: list = list(req.targets)
    for name, words in req.concepts.items():
        targets.append(logitlens.concept(lens, [w for w in words if w.strip()], name=name))
    return targets


def _check_lengths(lens: LogitLens, prompts: Sequence[str], limit: int) -> None:
    ids, _ = lens.encode(list(prompts))
    for i, seq in enumerate(ids):
        if len(seq) > limit:
            raise LogitLensError(
                f"prompt {i + 1} has {len(seq)} tokens; this server takes at most {limit} (--max-tokens)"
            )


def _run_job(entry: ModelEntry, req: RunRequest, limit: int) -> LensResult:
    """The work of one /api/run request, on the model's worker thread."""
    lens = entry.lens
    prompts = list(req.prompts)
    _check_lengths(lens, prompts, limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a multi-token target is tracked by its first token, as documented
        return lens.run(
            prompts,
            top_k=req.top_k,
            targets=_targets(lens, req) or None,
            answers=req.answers,
            positions=req.positions,
            include_subblocks=req.subblocks,
            lens=entry.lens_named(req.lens),
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "result"


# ---- the app --------------------------------------------------------------------------------------------
def create_app(
    models: Sequence[LogitLens] = (),
    *,
    tuned_lenses: dict[str, TunedLens] | None = None,
    files: Sequence[str | Path] = (),
    config: ServeConfig | None = None,
) -> FastAPI:
    """The app over already-loaded ``models`` (LogitLens, logit lens each), named ``tuned_lenses`` (each
    offered with every model it fits) and result ``files``; see the module docstring.

    Example:
        >>> app = create_app([LogitLens.from_pretrained("default")])
        >>> # uvicorn.run(app)  or  logitlens.web.server.serve(app, config)
    """
    config = config or ServeConfig()
    state = State(list(models), dict(tuned_lenses or {}), list(files), config)
    app = FastAPI(
        title="logitlens",
        version=logitlens.__version__,
        description="The logit lens over models loaded once: run prompts, open saved results, attribute.",
        responses=ERRORS,
    )
    app.state.logitlens = state
    app.add_middleware(
        Guard,
        allowed_hosts=_allowed_hosts(config),
        token=config.token,
        max_body=config.max_body_bytes,
        max_upload=config.max_upload_bytes,
    )
    _add_handlers(app)
    _add_page(app)
    _add_api(app, state)
    _add_result_views(app, state)
    app.router.add_event_handler("shutdown", state.close)
    return app


def _allowed_hosts(config: ServeConfig) -> set[str] | None:
    """Host names a request may name: the bound host and its loopback aliases; None for a wildcard bind."""
    host = config.host.strip("[]").lower()
    if host in ("0.0.0.0", "::", ""):
        return None
    hosts = {host, *(h.lower() for h in config.extra_hosts)}
    return hosts | LOOPBACK if host in LOOPBACK or host.startswith("127.") else hosts


def _one_line(exc: RequestValidationError) -> tuple[int, str]:
    """A validation error as (status, one line): malformed JSON is a 400, a wrong field a 422."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return 400, f"malformed JSON: {first.get('ctx', {}).get('error', 'cannot parse the body')}"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "is required"
    elif first.get("type") == "extra_forbidden":
        msg = "is not a field of this request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, f"{loc}: {msg}{more}".replace("\n", " ")


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, detail = _one_line(exc)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(LogitLensError)
    async def _bad_input(request: Request, exc: LogitLensError) -> JSONResponse:
        return JSONResponse({"detail": _first(exc)}, status_code=400)

    @app.exception_handler(_ClientGone)
    async def _gone(request: Request, exc: _ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it


def _add_page(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        text = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(text, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> Response:
        from logitlens.views.report import offline_plotlyjs

        code = await run_in_threadpool(offline_plotlyjs)  # the installed plotly package's, scrubbed of URLs
        return Response(code, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})

    for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
        _static_route(app, name, media)


def _static_route(app: FastAPI, name: str, media: str) -> None:
    async def serve_file() -> FileResponse:
        return FileResponse(str(STATIC / name), media_type=media, headers={"Cache-Control": "no-cache"})

    app.add_api_route(f"/static/{name}", serve_file, methods=["GET"], include_in_schema=False)


def _add_api(app: FastAPI, state: State) -> None:
    config = state.config

    @app.get("/api/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness, the version, and each model's waiting requests."""
        return {
            "status": "ok",
            "version": logitlens.__version__,
            "models": len(state.models),
            "pending": {n: e.worker.pending for n, e in state.models.items()},
            "cached_results": len(state.store),
        }

    @app.get("/api/models", response_model=ModelsResponse)
    async def models() -> dict[str, Any]:
        """The loaded models with their lenses, the command-line result files, and the limits."""
        return {
            "models": [_model_info(e) for e in state.models.values()],
            "files": [
                {"id": h.id, "name": h.name, "n_prompts": h.result.n_prompts} for h in state.files.values()
            ],
            "max_prompt_tokens": config.max_prompt_tokens,
            "max_prompts": config.max_prompts,
            "max_top_k": MAX_TOP_K,
        }

    @app.post("/api/run", responses={200: {"model": LensResultJSON, "description": "LensResult.to_dict()"}})
    async def run(req: RunRequest, request: Request) -> Response:
        """Run prompts; the LensResult JSON (readable by ``LensResult.from_dict``). Identical requests are
        answered from the cache. Header ``X-Result-Id``: the held result, for the view endpoints."""
        entry = state.model(req.model)
        entry.lens_named(req.lens)
        prompts = list(req.prompts)
        if len(prompts) > config.max_prompts:
            raise HTTPException(
                422, f"prompts: {len(prompts)} given; this server takes at most {config.max_prompts}"
            )
        key = json.dumps([entry.name, req.model_dump(mode="json")], sort_keys=True)
        held = state.store.cached(key)
        if held is None:
            res = await in_queue(entry, lambda: _run_job(entry, req, config.max_prompt_tokens), request)
            origin = Origin(entry.name, req.lens or LOGIT, req.subblocks)
            rid = "r" + ResultStore.key(key)
            held = state.store.put(Held(rid, _slug(prompts[0]), res, origin), key)
        body = await run_in_threadpool(lambda: json.dumps(held.result.to_dict(), ensure_ascii=False))
        return Response(body, media_type="application/json", headers={"X-Result-Id": held.id})

    @app.post("/api/attribute", response_model=AttributeResponse)
    async def attribute(req: AttributeRequest, request: Request) -> dict[str, Any]:
        """Direct logit attribution of ``target`` at ``position`` (the lens plays no part), with its chart."""
        entry = state.model(req.model)
        return await in_queue(entry, lambda: _attribute_job(entry, req, config.max_prompt_tokens), request)

    @app.post("/api/open", response_model=OpenResponse)
    async def open_file(
        file: Annotated[UploadFile, File(description="a .json or .parquet LensResult")],
    ) -> dict[str, Any]:
        """Hold an uploaded result file (a streamed run's Parquet too: then pick a prompt)."""
        data = await file.read()
        name = Path(file.filename or "result").name
        result = await run_in_threadpool(load_result_bytes, data, name)
        rid = "u" + ResultStore.key(data.hex()[:4096] + str(len(data)) + name)
        held = state.store.put(Held(rid, Path(name).stem, result, None))
        return _opened(held)

    @app.get("/api/files/{file_id}", response_model=OpenResponse)
    async def command_line_file(file_id: str) -> dict[str, Any]:
        """A result file given on the command line, by its id from ``/api/models``."""
        if file_id not in state.files:
            raise HTTPException(
                404, f"no file {file_id!r}; the files are: {', '.join(state.files) or 'none'}"
            )
        return _opened(state.files[file_id])


def _model_info(e: ModelEntry) -> dict[str, Any]:
    lens = e.lens
    try:
        lens.decoder.mid_module(0)
        subblocks = True
    except LogitLensError:
        subblocks = False
    return {
        "name": e.name,
        "model_type": lens.decoder.model_type,
        "n_layers": lens.n_layers,
        "vocab_size": lens.decoder.vocab_size,
        "dtype": str(lens.decoder.dtype).removeprefix("torch."),
        "lenses": list(e.lenses),
        "subblocks": subblocks,
        "pending": e.worker.pending,
    }


def _opened(held: Held) -> dict[str, Any]:
    res = held.result
    return {
        "id": held.id,
        "name": held.name,
        "n_prompts": res.n_prompts,
        "prompts": render.prompt_labels(res),
        "model": res.meta.get("model"),
        "lens": str(res.meta.get("lens", LOGIT)),
    }


def _attribute_job(entry: ModelEntry, req: AttributeRequest, limit: int) -> dict[str, Any]:
    """The work of one /api/attribute request, on the model's worker thread."""
    from logitlens.views.attribution import figure

    _check_lengths(entry.lens, [req.prompt], limit)
    df = entry.lens.attribute(req.prompt, req.target, position=req.position, baseline=req.baseline)
    a = df.attrs
    components = [
        {
            "component": str(r.component),
            "label": str(r.label),
            "kind": str(r.kind),
            "depth": None if r.depth is None or r.depth != r.depth else float(r.depth),
            "contribution": float(r.contribution),
            "cumulative": float(r.cumulative),
        }
        for r in df.itertuples()
    ]
    return {
        "model": entry.name,
        "target": str(a["target"]),
        "baseline": str(a["baseline"]),
        "position": int(a["position"]),
        "token": str(a["token"]),
        "logit_diff": float(a["logit_diff"]),
        "summary": str(a.get("summary", "")),
        "components": components,
        "figure": render.figure_json(figure(df)),
    }


def _add_result_views(app: FastAPI, state: State) -> None:
    @app.get("/api/results/{result_id}", responses={200: {"model": LensResultJSON}})
    async def result_json(result_id: str) -> Response:
        """A held result as the LensResult JSON."""
        held = state.held(result_id)
        body = await run_in_threadpool(lambda: json.dumps(held.result.to_dict(), ensure_ascii=False))
        return Response(body, media_type="application/json", headers={"X-Result-Id": held.id})

    @app.get("/api/results/{result_id}/view", response_model=ViewResponse)
    async def view(
        result_id: str,
        prompt: int = Query(0, description="the prompt's index"),
        stat: str = Query("top_probs", description="a statistic of the registry (the menu lists them)"),
        target: int = Query(0, ge=0, description="the target of a per-target statistic"),
    ) -> dict[str, Any]:
        """One prompt's heatmap (Plotly figure JSON) and the plain data behind it."""
        held = state.held(result_id)
        return await run_in_threadpool(render.view, held.id, held.result, prompt, stat, target)

    @app.get("/api/results/{result_id}/pin", response_model=PinResponse)
    async def pin(
        result_id: str, request: Request, prompt: int = 0, column: int = -1, row: int = -1
    ) -> dict[str, Any]:
        """A clicked cell's top-1 token across rows: recomputed exactly by its model when that model is
        loaded here, else read from the kept top-k."""
        held = state.held(result_id)
        return await _pin(state, held, prompt, column, row, request)

    @app.get("/api/results/{result_id}/compare", response_model=CompareResponse)
    async def compare(
        result_id: str,
        other: str,
        prompt: int = 0,
        other_prompt: int = 0,
        stat: str = "top_probs",
        target: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Two held results side by side on relative depth, one shared colour scale."""
        a, b = state.held(result_id), state.held(other)
        return await run_in_threadpool(_compare, a, b, prompt, other_prompt, stat, target)

    @app.get("/api/results/{result_id}/download")
    async def download(
        result_id: str,
        format: Literal["json", "parquet", "png", "html"] = "json",  # noqa: A002
        prompt: int = 0,
        stat: str = "top_probs",
        target: int = Query(0, ge=0),
    ) -> Response:
        """The held result as a file: JSON (the LensResult schema), Parquet, PNG (one prompt) or the
        offline HTML report."""
        held = state.held(result_id)
        data = await run_in_threadpool(_file_bytes, held.result, format, prompt, stat, target)
        disposition = f'attachment; filename="{held.name}.{format}"'
        return Response(data, media_type=DOWNLOADS[format], headers={"Content-Disposition": disposition})


async def _pin(
    state: State, held: Held, prompt: int, column: int, row: int, request: Request
) -> dict[str, Any]:
    res = held.result
    prompt, j, token_id = render.cell_at(res, prompt, column, row)
    pos = int(res.positions[prompt, j])
    origin = held.origin
    exact = origin is not None and origin.model in state.models
    if exact:
        assert origin is not None
        entry = state.models[origin.model]
        probs, ranks = await in_queue(
            entry, lambda: _pin_job(entry, origin, res, prompt, pos, token_id), request
        )
    else:
        probs, ranks = render.pin_from_top(res, prompt, j, token_id)
    return {
        "token": res.token(token_id),
        "token_id": token_id,
        "prompt": prompt,
        "column": res.columns(prompt).index(j),
        "position": pos,
        "row": row % res.n_rows,
        "row_names": res.row_names,
        "probs": probs,
        "ranks": ranks,
        "exact": exact,
        "top": render.cell_top(res, prompt, j, row),
    }


def _pin_job(entry: ModelEntry, origin: Origin, res: LensResult, prompt: int, pos: int, token_id: int):
    """One prompt, one position, the pinned token as the only target: its exact probability and rank."""
    out = entry.lens.run(
        [res.input_ids[prompt]],
        positions=[pos],
        targets=[token_id],
        top_k=1,
        lens=entry.lens_named(origin.lens),
        include_subblocks=origin.subblocks,
    )
    return out.target_probs[0, :, 0, 0].tolist(), [int(r) for r in out.target_ranks[0, :, 0, 0].tolist()]


def _compare(a: Held, b: Held, prompt: int, other_prompt: int, stat: str, target: int) -> dict[str, Any]:
    from logitlens.views import model as vm
    from logitlens.views.plotly import compare_figure

    results = [a.result, b.result]
    names = vm.distinct_names(results, [_label(a), _label(b)])
    fig = compare_figure(results, names, [prompt, other_prompt], stat=stat, target=target)
    return {"figure": render.figure_json(fig), "names": names}


def _label(held: Held) -> str:
    meta = held.result.meta
    lens = str(meta.get("lens", LOGIT))
    return f"{meta.get('model', held.name)}" + ("" if lens == LOGIT else f" · {lens} lens")


def _file_bytes(res: LensResult, fmt: str, prompt: int, stat: str, target: int) -> bytes:
    """The result written as ``fmt`` into a temporary folder, read back."""
    if fmt == "json":
        return json.dumps(res.to_dict(), ensure_ascii=False).encode("utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"result.{fmt}"
        if fmt == "parquet":
            res.save(path)
        elif fmt == "png":
            from logitlens.views.model import statistic
            from logitlens.views.png import write_png

            per_target = statistic(stat).per_target
            write_png(res, path, prompt, stat, target if per_target else 0)
        else:
            from logitlens.views.report import write_html

            write_html(res, path)
        return path.read_bytes()
