"""LogitLens: load a causal LM, run prompts through it and decode every block's residual stream.

Flow: prompts -> token ids (padding undone, pads masked) -> batches sorted by length, right-padded ->
capture rows at the requested positions -> chunked decode through the model's final norm + unembedding
-> statistics -> LensResult.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .architectures import Architecture, Decoder, architecture_for, check_decoder, execution_device
from .backends import Backend, HookBackend
from .errors import LogitLensError
from .lenses import FunctionLens, IdentityLens, Lens
from .reduce import DEFAULT_BUDGET_BYTES, decode_logits, decode_stats
from .result import LensResult
from .rows import Row, default_rows
from .stats import REGISTRY
from .tokens import TokenNamer

__all__ = ["DTYPES", "LogitLens", "Target"]

RowTransform = Callable[[int, torch.Tensor], torch.Tensor]  # (row index, (N, d)) -> (N, d)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


def _version() -> str:
    try:
        return version("logitlens")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass(frozen=True)
class Target:
    """A token (or a set of tokens whose probability mass is summed) tracked across rows."""

    name: str
    ids: tuple[int, ...]


class LogitLens:
    """The logit lens over a Hugging Face causal LM.

    Example:
        >>> lens = LogitLens.from_pretrained("default")
        >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
        >>> res.summary()
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer=None,
        *,
        arch: Architecture | None = None,
        check: bool = True,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        batch_size: int = 8,
        name: str | None = None,
        lens: Lens | None = None,
        backend: Backend | None = None,
    ):
        if not hasattr(model, "config"):
            raise LogitLensError(
                f"LogitLens wraps a Hugging Face causal LM (with .config), got {type(model).__name__}"
            )
        self.model: Any = model.eval()  # a transformers causal LM (its attributes are untyped here)
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.arch, self.arch_source = (arch, "given") if arch is not None else architecture_for(model)
        self.decoder = Decoder(model, self.arch)
        if lens is not None and not isinstance(lens, Lens):
            raise LogitLensError(f"lens must be a logitlens.Lens, got {type(lens).__name__}")
        self.lens: Lens = lens or IdentityLens()  # what is done to each row before decoding
        self.backend: Backend = backend or HookBackend(model, self.decoder)
        for what, value in (("batch_size", batch_size), ("budget_bytes", budget_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LogitLensError(f"{what} must be a positive integer, got {value!r}")
        self.budget_bytes = int(budget_bytes)
        self.batch_size = int(batch_size)
        self._namer = TokenNamer(tokenizer)
        self.self_check_diff: float | None = self._self_check() if check else None

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name: str = "default",
        *,
        dtype: str | torch.dtype = "float32",
        device: str | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        **kwargs,
    ) -> LogitLens:
        """Load ``name``: "default" (the embedded SmolLM2-135M-Instruct), a Hugging Face id or a local path.

        dtype: "float32" | "bfloat16" | "float16" | "auto" or a torch.dtype; device: "cpu", "cuda",
        "cuda:1", "mps" or "auto" (spread over the available devices). Remote code runs only with
        trust_remote_code=True. Extra keyword arguments go to LogitLens().
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = _parse_dtype(dtype)
        if name == "default":
            from .default_model import DEFAULT_NAME, model_dir

            path, label = str(model_dir()), DEFAULT_NAME
        else:
            path, label = name, name
        load_kwargs = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": torch_dtype}
        if device == "auto":
            load_kwargs["device_map"] = "auto"
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=trust_remote_code, revision=revision
            )
            model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        except (OSError, ValueError) as exc:
            where = "local directory" if Path(path).is_dir() else "model id"
            raise LogitLensError(
                f"cannot load model '{name}' ({where}): {_first_line(exc)}; pass a local folder with "
                "config.json and weights, or a Hugging Face id you can download"
            ) from exc
        if device not in (None, "auto"):
            try:
                model = model.to(device)  # type: ignore[arg-type]
            except (RuntimeError, AssertionError) as exc:
                raise LogitLensError(
                    f"cannot move the model to device '{device}': {_first_line(exc)}"
                ) from exc
        return cls(model, tokenizer, name=label, **kwargs)

    # ---- properties ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.decoder.n_layers

    @property
    def row_names(self) -> list[str]:
        """["embed", "0", ..., "L-1"]: row 0 is the embedding output, row i the output of block i-1."""
        return ["embed"] + [str(i) for i in range(self.n_layers)]

    @property
    def context_length(self) -> int | None:
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for attr in _CONTEXT_ATTRS:
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def _input_device(self) -> torch.device:
        emb = self.model.get_input_embeddings() if hasattr(self.model, "get_input_embeddings") else None
        return execution_device(emb if isinstance(emb, nn.Module) else self.model)

    def __repr__(self) -> str:
        return (
            f"LogitLens({self.name!r}, model_type={self.decoder.model_type!r}, layers={self.n_layers}, "
            f"vocab={self.decoder.vocab_size}, arch={self.arch_source})"
        )

    # ---- the self-check -----------------------------------------------------------------------------
    def _self_check(self) -> float:
        vocab = self.decoder.vocab_size
        probe = (torch.arange(1, 9) * 7919) % min(vocab, getattr(self.model.config, "vocab_size", vocab))
        probe = probe.unsqueeze(0).to(self._input_device)  # (1, 8)
        h_last, logits = self.backend.probe(probe)
        return check_decoder(self.decoder, h_last, logits)

    # ---- inputs -------------------------------------------------------------------------------------
    def encode(self, prompts, attention_mask: torch.Tensor | None = None) -> tuple[list[list[int]], list]:
        """Prompts -> (token ids per prompt, the prompt texts or None). Padding is removed."""
        if isinstance(prompts, dict) or hasattr(prompts, "input_ids"):  # a tokenizer's BatchEncoding
            attention_mask = prompts.get("attention_mask", attention_mask)
            prompts = prompts["input_ids"]
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(prompts, torch.Tensor):
            return _unpad(prompts, attention_mask), [None] * (1 if prompts.dim() == 1 else len(prompts))
        if not isinstance(prompts, Sequence) or isinstance(prompts, bytes) or len(prompts) == 0:
            raise LogitLensError(
                "prompts must be a string, a list of strings, a list of token-id lists or a LongTensor"
            )
        if all(isinstance(p, int) for p in prompts):
            prompts = [list(prompts)]
        ids: list[list[int]] = []
        texts: list[str | None] = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                if p == "":
                    raise LogitLensError(f"prompt {i} is empty: give some text")
                if self.tokenizer is None:
                    raise LogitLensError("text prompts need a tokenizer: LogitLens(model, tokenizer)")
                ids.append(list(self.tokenizer(p)["input_ids"]))
                texts.append(p)
            elif isinstance(p, Sequence | torch.Tensor) and all(isinstance(t, int) for t in list(p)):
                ids.append([int(t) for t in p])
                texts.append(None)
            else:
                raise LogitLensError(
                    f"prompt {i} is a {type(p).__name__}: give strings or lists of token ids"
                )
        return ids, texts

    def _check_ids(self, ids: list[list[int]], truncate: bool) -> list[list[int]]:
        vocab = self.decoder.vocab_size
        ctx = self.context_length
        out = []
        for i, seq in enumerate(ids):
            if not seq:
                raise LogitLensError(f"prompt {i} is empty: it has no tokens")
            bad = [t for t in seq if not 0 <= t < vocab]
            if bad:
                raise LogitLensError(
                    f"prompt {i} has token id {bad[0]} outside the vocabulary (0..{vocab - 1})"
                )
            if ctx is not None and len(seq) > ctx:
                if not truncate:
                    raise LogitLensError(
                        f"prompt {i} has {len(seq)} tokens but the model's context is {ctx}; shorten it "
                        "or pass truncate=True (--truncate) to keep its last tokens"
                    )
                warnings.warn(f"prompt {i}: kept the last {ctx} of {len(seq)} tokens", stacklevel=3)
                seq = seq[-ctx:]
            out.append(seq)
        return out

    def targets(self, targets) -> list[Target]:
        """Normalise targets: a string (its first token), a token id, or a list/tuple/set of those (summed)."""
        if targets is None:
            return []
        if isinstance(targets, str | int):
            targets = [targets]
        out = []
        for t in targets:
            if isinstance(t, list | tuple | set | frozenset):
                members = [self._target_ids(x, single=False) for x in t]
                if not members:
                    raise LogitLensError("a target set is empty: give at least one token")
                ids = tuple(dict.fromkeys(i for m in members for i in m))
                name = "|".join(x if isinstance(x, str) else self._namer(x) for x in t)
            else:
                ids = self._target_ids(t, single=True)
                name = t if isinstance(t, str) else self._namer(t)
            out.append(Target(name=name, ids=ids))
        return out

    def _target_ids(self, t, single: bool) -> tuple[int, ...]:
        vocab = self.decoder.vocab_size
        if isinstance(t, bool) or not isinstance(t, str | int):
            raise LogitLensError(f"a target must be a string or a token id, got {type(t).__name__}")
        if isinstance(t, int):
            if not 0 <= t < vocab:
                raise LogitLensError(f"target token id {t} is outside the vocabulary (0..{vocab - 1})")
            return (t,)
        if t == "":
            raise LogitLensError("a target is empty: give a word such as ' Paris' or a token id")
        if self.tokenizer is None:
            raise LogitLensError("string targets need a tokenizer: pass token ids instead")
        ids = list(self.tokenizer(t, add_special_tokens=False)["input_ids"])
        if not ids:
            raise LogitLensError(f"target {t!r} tokenises to nothing: give another string or a token id")
        if len(ids) > 1:
            pieces = self._namer.many(ids)
            warnings.warn(
                f"target {t!r} is {len(ids)} tokens {pieces}; tracking the first, {pieces[0]!r}",
                stacklevel=4,
            )
        return (ids[0],)

    # ---- running ------------------------------------------------------------------------------------
    def rows(self, include_subblocks: bool = False) -> list[Row]:
        """The rows a run decodes: "embed", then each block's output (after its "attn" row when asked)."""
        return default_rows(self.n_layers, include_subblocks)

    def _lens_for(self, lens: Lens | None, transform: RowTransform | None) -> Lens:
        if lens is not None and transform is not None:
            raise LogitLensError("give either lens= or transform=, not both")
        if transform is not None:
            return FunctionLens(transform)
        if lens is not None and not isinstance(lens, Lens):
            raise LogitLensError(f"lens must be a logitlens.Lens, got {type(lens).__name__}")
        return lens or self.lens

    def run(self, prompts, **kwargs) -> LensResult:
        """Decode every row at every (or the chosen) position of each prompt: ``iter_run``'s batches as one
        LensResult, prompts in the order given. Arguments as ``iter_run``.

        Example:
            >>> res = lens.run(["The Eiffel Tower is in the city of"], top_k=5, targets=[" Paris"])
        """
        parts = list(self.iter_run(prompts, **kwargs))
        res = parts[0] if len(parts) == 1 else LensResult.concat(parts)
        order = sorted(range(res.n_prompts), key=res.prompt_index.__getitem__)
        return res if order == list(range(res.n_prompts)) else res.select(order)

    def iter_run(
        self,
        prompts,
        *,
        top_k: int = 10,
        targets=None,
        positions: Sequence[int] | None = None,
        attention_mask: torch.Tensor | None = None,
        truncate: bool = False,
        batch_size: int | None = None,
        transform: RowTransform | None = None,
        lens: Lens | None = None,
        include_subblocks: bool = False,
    ) -> Iterator[LensResult]:
        """Yield one LensResult per batch as it finishes (prompts of similar length share a batch).

        prompts: str | list[str] | list[list[int]] | LongTensor (B, T) with ``attention_mask`` (either
        padding side). positions: indices into each prompt (negative count from its end), e.g. [-1].
        targets: see ``targets()``. lens: a ``Lens`` for this run (default: this object's, the logit lens);
        transform: a function (row index, (N, d)) -> (N, d) applied to every row but the output row.
        include_subblocks: add each block's "attn" row (after attention, before the MLP). Each result's
        ``prompt_index`` says which input prompts it holds.
        """
        vocab = self.decoder.vocab_size
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
            raise LogitLensError(
                f"top_k must be an integer from 1 to the vocabulary size {vocab}, got {top_k}"
            )
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise LogitLensError(f"batch_size must be a positive integer, got {bs!r}")
        use = self._lens_for(lens, transform)
        rows = self.rows(include_subblocks)
        if include_subblocks:
            self.decoder.mid_module(0)  # one clear line for families without "attn" rows, before any work
        ids, texts = self.encode(prompts, attention_mask)
        ids = self._check_ids(ids, truncate)
        tgts = self.targets(targets)
        cols = _resolve_positions(ids, positions)  # per prompt: input position of each column
        chunk_fn = use.chunk_transform(rows, output_row=len(rows) - 1)
        half = self.decoder.dtype in (torch.float16, torch.bfloat16)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
        meta = self._meta(top_k, use)
        for start in range(0, len(ids), bs):
            batch = order[start : start + bs]
            captured = self._capture(batch, ids, cols, rows)  # (B, R, P, d)
            cells = [(b, j) for b, i in enumerate(batch) for j in range(len(cols[i]))]
            bi = torch.tensor([c[0] for c in cells], device=captured.device)
            ji = torch.tensor([c[1] for c in cells], device=captured.device)
            flat = captured[bi, :, ji]  # (M, R, d), a copy
            del captured  # hold the captured rows once, not twice, while decoding
            next_ids = torch.tensor(
                [_next_id(ids[batch[b]], cols[batch[b]][j]) for b, j in cells], dtype=torch.long
            )
            st = decode_stats(
                flat,
                self.decoder.logits,
                vocab_size=vocab,
                top_k=top_k,
                next_ids=next_ids,
                targets=[t.ids for t in tgts],
                budget_bytes=self.budget_bytes,
                half_precision=half,
                transform=chunk_fn,
            )
            del flat
            yield self._batch_result(batch, ids, texts, cols, cells, st, rows, tgts, meta)

    def _batch_result(self, batch, ids, texts, cols, cells, st, rows, tgts, meta) -> LensResult:
        """Scatter one batch's (M, R, ...) statistics into (B, R, P, ...) tensors and wrap them."""
        n, n_rows, n_cols = len(batch), len(rows), max(len(cols[i]) for i in batch)
        bi = torch.tensor([c[0] for c in cells])
        ji = torch.tensor([c[1] for c in cells])
        stats = {}
        for name, value in st.items():
            stat = REGISTRY[name]
            full = torch.full((n, n_rows, n_cols, *value.shape[2:]), stat.fill, dtype=stat.dtype)
            full[bi, :, ji] = value
            stats[name] = full
        positions = torch.full((n, n_cols), -1, dtype=torch.long)
        for b, i in enumerate(batch):
            positions[b, : len(cols[i])] = torch.tensor(cols[i])
        seqs = [ids[i] for i in batch]
        mentioned = set(stats["top_ids"][stats["top_ids"] >= 0].unique().tolist())
        mentioned.update(t for seq in seqs for t in seq)
        mentioned.update(t for tgt in tgts for t in tgt.ids)
        return LensResult(
            stats=stats,
            positions=positions,
            rows=rows,
            row_names=[r.name for r in rows],
            tokens=[self._namer.many(seq) for seq in seqs],
            input_ids=seqs,
            vocab={i: self._namer(i) for i in sorted(mentioned)},
            target_names=[t.name for t in tgts],
            target_ids=[list(t.ids) for t in tgts],
            prompts=[texts[i] for i in batch],
            prompt_index=list(batch),
            meta=meta,
        )

    def _meta(self, top_k: int, lens: Lens | None = None) -> dict:
        return {
            "model": self.name,
            "model_type": self.decoder.model_type,
            "n_layers": self.n_layers,
            "vocab_size": self.decoder.vocab_size,
            "dtype": str(self.decoder.dtype).removeprefix("torch."),
            "lens": (lens or self.lens).name,
            "backend": self.backend.name,
            "top_k": top_k,
            "arch_source": self.arch_source,
            "logitlens_version": _version(),
        }

    def _capture(
        self, batch: list[int], ids: list[list[int]], cols: list[list[int]], rows: Sequence[Row]
    ) -> torch.Tensor:
        """Right-padded forward of some prompts; (B, R, P, d) residual rows at their columns."""
        dev = self._input_device
        t_max = max(len(ids[i]) for i in batch)
        p_max = max(len(cols[i]) for i in batch)
        input_ids = torch.zeros((len(batch), t_max), dtype=torch.long)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        gather = torch.zeros((len(batch), p_max), dtype=torch.long)
        for b, i in enumerate(batch):
            input_ids[b, : len(ids[i])] = torch.tensor(ids[i])
            mask[b, : len(ids[i])] = 1
            gather[b, : len(cols[i])] = torch.tensor(cols[i])
        return self.backend.capture(input_ids.to(dev), mask.to(dev), gather.to(dev), rows)

    def layer_logits(
        self,
        prompt,
        *,
        transform: RowTransform | None = None,
        lens: Lens | None = None,
        include_subblocks: bool = False,
    ) -> torch.Tensor:
        """Raw fp32 logits of every row for one prompt: (rows, positions, vocab). Opt-in: holds it all."""
        ids, _ = self.encode(prompt)
        if len(ids) != 1:
            raise LogitLensError(f"layer_logits takes one prompt, got {len(ids)}")
        ids = self._check_ids(ids, truncate=False)
        cols = [list(range(len(ids[0])))]
        rows = self.rows(include_subblocks)
        captured = self._capture([0], ids, cols, rows)[0]  # (R, T, d)
        fn = self._lens_for(lens, transform).chunk_transform(rows, output_row=len(rows) - 1)
        return decode_logits(captured.transpose(0, 1), self.decoder.logits, fn)


def _parse_dtype(dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise LogitLensError(f"unknown dtype '{dtype}'; choose one of: float32, bfloat16, float16, auto")
    return DTYPES[dtype]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
    """Token-id rows of a (B, T) or (T,) tensor, with left or right padding removed by the mask."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise LogitLensError("token ids must be an integer tensor of shape (batch, tokens)")
    if attention_mask is None:
        return input_ids.tolist()
    if attention_mask.shape != input_ids.shape:
        raise LogitLensError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the ids have {tuple(input_ids.shape)}"
        )
    out = []
    for i, (row, m) in enumerate(zip(input_ids.tolist(), attention_mask.bool().tolist(), strict=True)):
        kept = [j for j, keep in enumerate(m) if keep]
        if kept and kept != list(range(kept[0], kept[-1] + 1)):
            raise LogitLensError(
                f"prompt {i}: the attention mask has holes; only left or right padding works"
            )
        out.append([row[j] for j in kept])
    return out


def _resolve_positions(ids: list[list[int]], positions: Sequence[int] | None) -> list[list[int]]:
    if positions is None:
        return [list(range(len(seq))) for seq in ids]
    if isinstance(positions, int):
        positions = [positions]
    if len(positions) == 0:
        raise LogitLensError("positions is empty: give indices such as [-1], or leave it out for all")
    out = []
    for i, seq in enumerate(ids):
        cols = []
        for p in positions:
            q = p + len(seq) if p < 0 else p
            if not 0 <= q < len(seq):
                raise LogitLensError(
                    f"position {p} is out of range for prompt {i}, which has {len(seq)} tokens"
                )
            cols.append(q)
        out.append(cols)
    return out


def _next_id(seq: list[int], pos: int) -> int:
    return seq[pos + 1] if pos + 1 < len(seq) else -1
