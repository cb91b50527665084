"""The request and response models of the web API (pydantic): what ``/docs`` shows and what is validated.

Requests forbid unknown fields, so that a typo ("topk") is a 422 with one line, never silently ignored.
Limits that depend on the server's settings (tokens per prompt, prompts per request) are checked in
``app.py`` with the loaded tokenizer; the static ones are here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AttributeRequest",
    "AttributeResponse",
    "Component",
    "CompareResponse",
    "ErrorResponse",
    "FileInfo",
    "HealthResponse",
    "LensResultJSON",
    "MenuItem",
    "ModelInfo",
    "ModelsResponse",
    "OpenResponse",
    "PinResponse",
    "RunRequest",
    "TensorJSON",
    "ViewResponse",
]

MAX_TOP_K = 100  # top tokens kept per cell at most
MAX_TARGETS = 32  # targets plus concepts per request
MAX_TEXT = 20_000  # characters of one prompt, before tokenisation (the token limit is checked after)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer: one line saying what is wrong and how to fix it."""

    detail: str


class RunRequest(_Request):
    """``POST /api/run``: run prompts through a loaded model and lens."""

    prompts: str | list[str] = Field(description="one prompt, or several (one result row each)")
    model: str | None = Field(None, description="a loaded model's name (GET /api/models); default: the first")
    lens: str | None = Field(None, description='"logit" (default) or a loaded tuned lens\'s name')
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="top tokens kept per cell")
    targets: list[str] = Field(default_factory=list, description='tokens to track, e.g. " Paris"')
    concepts: dict[str, list[str]] = Field(
        default_factory=dict, description='named word sets summed as one target, e.g. {"fr": ["Paris"]}'
    )
    answers: list[str | None] | None = Field(
        None, description="one answer per prompt (None: no answer), teacher-forced after it"
    )
    positions: list[int] | None = Field(None, description="positions to decode (negative from the end)")
    subblocks: bool = Field(False, description='add the "after attention" rows ("i.attn")')

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> list[str]:
        prompts = [v] if isinstance(v, str) else v
        if not prompts:
            raise ValueError("give at least one prompt")
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"prompt {i + 1} is empty: give some text")
            if len(p) > MAX_TEXT:
                raise ValueError(f"prompt {i + 1} has {len(p)} characters; the limit is {MAX_TEXT}")
        return prompts

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if any(t == "" for t in v):
            raise ValueError("a target is empty: give a word such as ' Paris' (mind the leading space)")
        return v

    @field_validator("concepts")
    @classmethod
    def _concepts(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, words in v.items():
            if not name.strip() or not [w for w in words if w.strip()]:
                raise ValueError(f"concept {name!r} needs a name and at least one word")
        return v

    @field_validator("positions")
    @classmethod
    def _positions(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and not v:
            raise ValueError("positions is empty: give indices such as [-1], or leave it out for all")
        return v


class AttributeRequest(_Request):
    """``POST /api/attribute``: the direct logit attribution of one token at one position."""

    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    target: str | int = Field(description='ONE token: a string such as " Paris", or a token id')
    model: str | None = None
    position: int = Field(-1, description="the position whose next-token logits are explained")
    baseline: str | int = Field("mean", description='"mean" (mean logit) or a second token')


class TensorJSON(BaseModel):
    """One tensor of a saved result: base64 of the little-endian array."""

    dtype: Literal["float32", "int32", "uint8", "int64"]
    shape: list[int]
    data: str


class LensResultJSON(BaseModel):
    """The versioned LensResult schema (``LensResult.to_dict`` / ``save(".json")``), as ``/api/run`` returns
    it; ``LensResult.from_dict`` reads it back. Extra keys of later versions are kept."""

    model_config = ConfigDict(extra="allow")

    meta: dict[str, Any]
    rows: list[dict[str, Any]]
    row_names: list[str]
    tokens: list[list[str]]
    input_ids: list[list[int]]
    vocab: dict[str, str]
    target_names: list[str]
    target_ids: list[list[int]]
    prompts: list[str | None]
    prompt_index: list[int]
    answers: list[str | None]
    answer_ids: list[list[int]]
    shape: dict[str, int]
    tensors: dict[str, TensorJSON]
    statistics: dict[str, dict[str, bool]]
    answer_tensors: dict[str, TensorJSON] | None = None


class Component(BaseModel):
    """One line of an attribution: a component and what it adds to the logit difference."""

    component: str
    label: str
    kind: str
    depth: float | None
    contribution: float
    cumulative: float


class AttributeResponse(BaseModel):
    """The attribution: its lines in model order, what they explain, and its Plotly bar chart."""

    model: str
    target: str
    baseline: str
    position: int
    token: str
    logit_diff: float
    summary: str
    components: list[Component]
    figure: dict[str, Any] = Field(description="Plotly figure JSON (views.attribution.figure)")


class ModelInfo(BaseModel):
    """A loaded model, its lenses and its queue."""

    name: str
    model_type: str
    n_layers: int
    vocab_size: int
    dtype: str
    lenses: list[str]
    subblocks: bool = Field(description='whether "after attention" rows can be decoded')
    pending: int = Field(description="requests waiting in its queue")


class FileInfo(BaseModel):
    """A result file given on the command line (opened by id, never by path)."""

    id: str
    name: str
    n_prompts: int


class ModelsResponse(BaseModel):
    """``GET /api/models``: what the page can choose from."""

    models: list[ModelInfo]
    files: list[FileInfo]
    max_prompt_tokens: int
    max_prompts: int
    max_top_k: int


class HealthResponse(BaseModel):
    """``GET /api/health``."""

    status: Literal["ok"]
    version: str
    models: int
    pending: dict[str, int]
    cached_results: int


class OpenResponse(BaseModel):
    """``POST /api/open`` and ``GET /api/files/{id}``: a result the server now holds, by id."""

    id: str
    name: str
    n_prompts: int
    prompts: list[str] = Field(description="a label per prompt, to pick one")
    model: str | None
    lens: str


class MenuItem(BaseModel):
    """One choice of the statistic selector (from the statistics registry)."""

    stat: str
    target: int | None
    label: str


class ViewResponse(BaseModel):
    """One prompt of a held result as the page draws it: the Plotly heatmap and the plain data behind it."""

    id: str
    prompt: int
    n_prompts: int
    prompts: list[str]
    model: str | None
    lens: str
    stat: str
    target: int | None
    menu: list[MenuItem]
    row_names: list[str]
    row_labels: list[str]
    depths: list[float]
    critical: list[int] = Field(description="row indices of the critical layers")
    positions: list[int]
    tokens: list[str]
    cells: list[list[str]] = Field(description="(rows, columns) top-1 token")
    top: list[list[list[tuple[str, float]]]] = Field(description="(rows, columns, k) top tokens")
    summary: list[str] = Field(description="lines about the last position")
    answer: dict[str, Any] | None = Field(None, description="per-row answer log-probability")
    figure: dict[str, Any] = Field(description="Plotly figure JSON (views.plotly.heatmap)")


class PinResponse(BaseModel):
    """A pinned cell: its top-1 token's probability and rank on every row, and the cell's top-k."""

    token: str
    token_id: int
    prompt: int
    column: int
    position: int
    row: int
    row_names: list[str]
    probs: list[float | None]
    ranks: list[int | None] = Field(description="None: below the top-k kept (when not exact)")
    exact: bool = Field(description="True: recomputed by the model; False: read from the kept top-k")
    top: list[tuple[str, float]]


class CompareResponse(BaseModel):
    """Two held results side by side on relative depth (views.plotly.compare_figure)."""

    figure: dict[str, Any]
    names: list[str]
