"""LogitLens: load a causal LM, run prompts through it and decode every block's residual stream.

Flow: prompts -> token ids (padding undone, pads masked) -> batches sorted by length, right-padded ->
capture rows at the requested positions -> chunked decode through the model's final norm + unembedding
-> statistics -> LensResult.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from logitlens.core.rows import Row, default_rows
from logitlens.core.tokens import TokenNamer
from logitlens.core.version import package_version
from logitlens.engine.inputs import PromptInputs, Target, resolve_positions
from logitlens.engine.lenses import FunctionLens, IdentityLens, Lens
from logitlens.engine.plan import BatchPlan, Decode, batch_inputs, run_local, run_remote
from logitlens.engine.reduce import DEFAULT_BUDGET_BYTES, decode_logits
from logitlens.engine.result import LensResult
from logitlens.engine.tuned import TunedLens
from logitlens.errors import LogitLensError, first_line
from logitlens.model.architectures import (
    Architecture,
    Decoder,
    architecture_for,
    check_decoder,
    execution_device,
)
from logitlens.model.backends import Backend, HookBackend
from logitlens.model.backends.nnsight import wrap_model

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


class LogitLens:
    """The logit lens over a Hugging Face causal LM.

    tuned_lens: a ``TunedLens`` or its folder (either layout, see ``logitlens.tuned``): every run then
    decodes through its translators (``meta["lens"] == "tuned"``). It is refused, in one line, when made for
    another model (block count, d_model, unembedding hash); ``check_hash=False`` skips the hash only.

    Example:
        >>> lens = LogitLens.from_pretrained("default")
        >>> res = lens.run("The Eiffel Tower is in the city of", targets=[" Paris"])
        >>> res.summary()
        >>> tuned = LogitLens.from_pretrained("default", tuned_lens="lenses/SmolLM2-135M")
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
        tuned_lens: str | Path | TunedLens | None = None,
        check_hash: bool = True,
    ):
        wrapped = wrap_model(model)  # an nnsight model: its transformers model, tokenizer and backend
        if wrapped is not None:
            model, own_tokenizer, make_backend = wrapped
            tokenizer = own_tokenizer if tokenizer is None else tokenizer
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
        if tuned_lens is not None:  # before the self-check: a lens made for another model fails at once
            lens = _tuned_lens(tuned_lens, lens)
            lens.check(self, check_hash=check_hash)  # the hash is skipped for weights not here (meta)
        self.lens: Lens = lens or IdentityLens()  # what is done to each row before decoding
        if backend is None:
            backend = make_backend(self.decoder) if wrapped is not None else HookBackend(model, self.decoder)
        self.backend: Backend = backend
        for what, value in (("batch_size", batch_size), ("budget_bytes", budget_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LogitLensError(f"{what} must be a positive integer, got {value!r}")
        self.budget_bytes = int(budget_bytes)
        self.batch_size = int(batch_size)
        self._namer = TokenNamer(tokenizer)
        # A model without weights here (nnsight's meta model, for remote runs) is checked on the server.
        self.self_check_diff: float | None = self._self_check() if check and self.backend.runs_here else None

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
        backend: str = "hooks",
        load_weights: bool = True,
        device_map: str | dict | None = None,
        max_memory: dict | None = None,
        offload_folder: str | None = None,
        quantization: Any = None,
        **kwargs,
    ) -> LogitLens:
        """Load ``name``: "default" (the embedded SmolLM2-135M-Instruct), a Hugging Face id or a local path.

        dtype: "float32" | "bfloat16" | "float16" | "auto" or a torch.dtype; device: "cpu", "cuda",
        "cuda:1", "mps" or "auto" (spread over the available devices). Remote code runs only with
        trust_remote_code=True. backend: "hooks" (forward hooks) or "nnsight" (nnsight traces; needs
        ``pip install 'logitlens[remote]'``); load_weights=False (nnsight only) builds the model on the meta
        device, for remote runs: nothing is downloaded but the config and tokenizer. device_map ("auto",
        "balanced", "sequential" or {module: device}), max_memory, offload_folder: accelerate's placement of
        a model bigger than one device; quantization: "int8" (torchao, CPU or GPU), "bnb-8bit" / "bnb-4bit"
        (CUDA) or a transformers quantisation config (see ``logitlens.loading``). Extra keyword arguments
        go to LogitLens().
        """
        from logitlens.model.loading import import_transformers, load_options

        import_transformers(quantization)  # first: transformers' models without torchao unless asked
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = _parse_dtype(dtype)
        if backend not in ("hooks", "nnsight"):
            raise LogitLensError(f"unknown backend {backend!r}; choose one of: hooks, nnsight")
        if not load_weights and backend != "nnsight":
            raise LogitLensError("load_weights=False needs backend='nnsight' (a model for remote runs)")
        if kwargs.get("tuned_lens") is not None:  # its folder is read before the model: a bad one fails fast
            kwargs["tuned_lens"] = _tuned_lens(kwargs["tuned_lens"], kwargs.get("lens"))
        if name == "default":
            from logitlens.model.default_model import DEFAULT_NAME, model_dir

            path, label = str(model_dir()), DEFAULT_NAME
        else:
            from logitlens.model.sources import check_source

            name = str(name) if isinstance(name, Path) else name  # a pathlib folder works as well
            if not isinstance(name, str) or not name.strip():
                raise LogitLensError("give a model: 'default', a Hugging Face id or a local folder")
            check_source(name, revision)  # one line in seconds, not a minute of hub retries
            path, label = name, name
        placement = load_options(
            device=device,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            quantization=quantization,
        )
        if backend == "nnsight":
            return cls._from_pretrained_nnsight(
                path,
                name,
                label,
                torch_dtype,
                device,
                trust_remote_code,
                revision,
                load_weights,
                placement,
                **kwargs,
            )
        load_kwargs = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": torch_dtype}
        load_kwargs.update(placement)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=trust_remote_code, revision=revision
            )
            model = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        except (OSError, ValueError) as exc:
            where = "local directory" if Path(path).is_dir() else "model id"
            raise LogitLensError(
                f"cannot load model '{name}' ({where}): {first_line(exc)}; pass a local folder with "
                "config.json and weights, or a Hugging Face id you can download"
            ) from exc
        if device not in (None, "auto"):
            try:
                model = model.to(device)  # type: ignore[arg-type]
            except (RuntimeError, AssertionError) as exc:
                raise LogitLensError(
                    f"cannot move the model to device '{device}': {first_line(exc)}"
                ) from exc
        return cls(model, tokenizer, name=label, **kwargs)

    @classmethod
    def _from_pretrained_nnsight(
        cls,
        path,
        name,
        label,
        torch_dtype,
        device,
        trust_remote_code,
        revision,
        load_weights,
        placement,
        **kwargs,
    ) -> LogitLens:
        """from_pretrained(backend="nnsight"): nnsight's TransformersModel, its weights loaded or not."""
        from transformers import AutoTokenizer

        from logitlens.model.ndif import require_nnsight

        nnsight = require_nnsight()
        nn_kwargs = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": torch_dtype}
        nn_kwargs.update(placement if load_weights else {})  # a meta model for remote runs is placed nowhere
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=trust_remote_code, revision=revision
            )
            nn_model = nnsight.TransformersModel(
                path, task="text-generation", tokenizer=tokenizer, dispatch=load_weights, **nn_kwargs
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise LogitLensError(f"cannot load model '{name}' with nnsight: {first_line(exc)}") from exc
        if load_weights and device not in (None, "auto"):
            nn_model.to(device)
        return cls(nn_model, name=label, **kwargs)

    # ---- properties ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.decoder.n_layers

    @property
    def row_names(self) -> list[str]:
        """Names of the default rows: "embed" (the embeddings), then "i" (after block i)."""
        return [r.name for r in self.rows()]

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
    def input_device(self) -> torch.device:
        """Where the model's input ids go: the execution device of its input embeddings (with a device map,
        the first block's device; with disk offload, where accelerate runs the embeddings)."""
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
        probe = probe.unsqueeze(0).to(self.input_device)  # (1, 8)
        h_last, logits = self.backend.probe(probe)
        return check_decoder(self.decoder, h_last, logits)

    # ---- inputs -------------------------------------------------------------------------------------
    def encode(
        self,
        prompts,
        attention_mask: torch.Tensor | None = None,
        *,
        chat: bool = False,
        prepend_bos: bool | None = None,
    ) -> tuple[list[list[int]], list]:
        """Prompts -> (token ids per prompt, the prompt texts or None). Padding is removed.

        Text prompts only: chat=True wraps each in the tokenizer's chat template as a user message, with
        the assistant's turn opened (the last position is where the assistant's answer begins);
        prepend_bos=True / False adds / removes a leading BOS token (None: as the tokenizer does).
        """
        return self.inputs.encode(prompts, attention_mask, chat=chat, prepend_bos=prepend_bos)

    @property
    def inputs(self) -> PromptInputs:
        """Input preparation for this model (tokenizer, vocabulary, context): see ``engine.inputs``."""
        return PromptInputs(
            self.tokenizer,
            vocab_size=self.decoder.vocab_size,
            context_length=self.context_length,
            name=self.name,
        )

    @property
    def namer(self) -> TokenNamer:
        """Readable token names (``␣Paris``) with this model's tokenizer."""
        return self._namer

    def targets(self, targets) -> list[Target]:
        """Normalise targets: a string (its first token), a token id, or a list/tuple/set of those (summed),
        or a ready ``Target`` (such as ``logitlens.concept(...)``), kept as it is once its ids are checked."""
        return self.inputs.targets(targets)

    def answers(self, answers, n_prompts: int) -> list[tuple[str | None, tuple[int, ...]]]:
        """Normalise per-prompt answers: one string (tokenised without special tokens), list of token ids,
        or None (no answer) per prompt -> (readable name or None, token ids) per prompt."""
        return self.inputs.answers(answers, n_prompts)

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

    def stream(self, prompts, path, *, resume: bool = False, progress: bool = True, **kwargs):
        """Run prompts batch by batch into ``path`` (.parquet or .jsonl) as each batch finishes; a killed
        run continues with ``resume=True``. Returns the per-row aggregate (see ``logitlens.stream``).

        Example:
            >>> lens.stream(open("facts.txt").read().splitlines(), "facts.parquet", targets=[" Paris"])
        """
        from logitlens.tasks.stream import stream

        return stream(self, prompts, path, resume=resume, progress=progress, **kwargs)

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
        answers=None,
        chat: bool = False,
        prepend_bos: bool | None = None,
        remote: bool | str = False,
    ) -> Iterator[LensResult]:
        """Yield one LensResult per batch as it finishes (prompts of similar length share a batch).

        remote: True runs the whole lens on NDIF through nnsight (API key: NDIF_API_KEY or `nnsight login`),
        "local" runs nnsight's simulation of that request here; only the statistics come back, and the
        self-check runs on the server's side (the logit lens only, without answers).

        prompts: str | list[str] | list[list[int]] | LongTensor (B, T) with ``attention_mask`` (either
        padding side). positions: indices into each prompt (negative count from its end), e.g. [-1].
        targets: see ``targets()``. lens: a ``Lens`` for this run (default: this object's: the logit lens,
        or the tuned lens it was made with, ``tuned_lens=``);
        transform: a function (row index, (N, d)) -> (N, d) applied to every row but the output row.
        include_subblocks: add each block's "attn" row (after attention, before the MLP). answers: one
        answer per prompt (a string, token ids or None), appended to its prompt and teacher-forced in the
        same forward pass: ``answer_logprobs`` (N, R) is, per row, the sum over the answer's tokens of
        log p_row(a_i | prompt, a_<i); ``answer_probs`` / ``answer_ranks`` (N, R) are the first answer
        token's probability and rank at the prompt's last position. Each result's ``prompt_index`` says
        which input prompts it holds. chat / prepend_bos: see ``encode`` (text prompts only); the result's
        ``tokens`` show exactly what the model saw.
        """
        plan = self._plan(
            prompts, top_k, targets, positions, attention_mask, truncate, batch_size,
            include_subblocks, answers, chat, prepend_bos,
        )  # fmt: skip
        use = self._lens_for(lens, transform)
        plan.meta["lens"] = use.name
        chunk_fn = use.chunk_transform(plan.rows, output_row=len(plan.rows) - 1)
        if remote:
            if chunk_fn is not None or plan.answers is not None:
                what = "answers" if plan.answers is not None else f"the {use.name!r} lens"
                raise LogitLensError(
                    f"remote runs decode with the logit lens, without answers: run {what} here"
                )
            backend = self.backend.remote_backend(self.model, self.decoder, self.tokenizer)
            yield from run_remote(plan, backend, self.budget_bytes, remote, self._namer)
            return
        if not self.backend.runs_here:
            raise LogitLensError(
                "this nnsight model has no weights here (built for remote runs): pass remote=True "
                "(NDIF) or remote='local', or load it with its weights (dispatch=True)"
            )
        decode = Decode(
            logits=self.decoder.logits,
            vocab_size=self.decoder.vocab_size,
            budget_bytes=self.budget_bytes,
            half_precision=self.decoder.dtype in (torch.float16, torch.bfloat16),
            transform=chunk_fn,
        )
        dev = self.input_device
        capture = lambda i, m, g: self.backend.capture(i.to(dev), m.to(dev), g.to(dev), plan.rows)  # noqa: E731
        yield from run_local(plan, capture, decode, self._namer)

    def _plan(
        self, prompts, top_k, targets, positions, attention_mask, truncate, batch_size, include_subblocks,
        answers, chat, prepend_bos,
    ) -> BatchPlan:  # fmt: skip
        """Everything ``iter_run`` checks and decides before any model work."""
        vocab = self.decoder.vocab_size
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
            raise LogitLensError(
                f"top_k must be an integer from 1 to the vocabulary size {vocab}, got {top_k}"
            )
        bs = self.batch_size if batch_size is None else batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise LogitLensError(f"batch_size must be a positive integer, got {bs!r}")
        rows = self.rows(include_subblocks)
        if include_subblocks:
            self.decoder.mid_module(0)  # one clear line for families without "attn" rows, before any work
        prep = self.inputs
        ids, texts = prep.encode(prompts, attention_mask, chat=chat, prepend_bos=prepend_bos)
        ids = prep.check_ids(ids, truncate)
        tgts = prep.targets(targets)
        answer_list = None if answers is None else prep.answers(answers, len(ids))
        ctx = self.context_length
        for i, seq in enumerate(ids):
            a = answer_list[i][1] if answer_list is not None else ()
            if ctx is not None and a and len(seq) + len(a) - 1 > ctx:
                raise LogitLensError(
                    f"prompt {i + 1} with its answer has {len(seq) + len(a) - 1} tokens but the model's "
                    f"context is {ctx}; shorten the prompt or the answer"
                )
        cols = resolve_positions(ids, positions)  # per prompt: input position of each column
        return BatchPlan(
            ids=ids, texts=texts, cols=cols, rows=rows, targets=tgts, top_k=top_k, batch_size=bs,
            meta=self._meta(top_k), answers=answer_list,
        )  # fmt: skip

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
            "logitlens_version": package_version(),
        }

    def capture(self, ids: list[list[int]], cols: list[list[int]], rows: Sequence[Row]) -> torch.Tensor:
        """Right-padded forward of some token-id lists; (B, R, P, d) residual rows at their columns."""
        dev = self.input_device
        input_ids, mask, gather = batch_inputs(ids, cols)
        return self.backend.capture(input_ids.to(dev), mask.to(dev), gather.to(dev), rows)

    def layer_logits(
        self,
        prompt,
        *,
        transform: RowTransform | None = None,
        lens: Lens | None = None,
        include_subblocks: bool = False,
        chat: bool = False,
        prepend_bos: bool | None = None,
    ) -> torch.Tensor:
        """Raw fp32 logits of every row for one prompt: (rows, positions, vocab). Opt-in: holds it all."""
        ids, _ = self.encode(prompt, chat=chat, prepend_bos=prepend_bos)
        if len(ids) != 1:
            raise LogitLensError(f"layer_logits takes one prompt, got {len(ids)}")
        ids = self.inputs.check_ids(ids, truncate=False)
        cols = [list(range(len(ids[0])))]
        rows = self.rows(include_subblocks)
        use = self._lens_for(lens, transform)
        fn = use.chunk_transform(rows, output_row=len(rows) - 1)  # refusing these rows: before any work
        captured = self.capture(ids, cols, rows)[0]  # (R, T, d)
        return decode_logits(captured.transpose(0, 1), self.decoder.logits, fn)

    def attribute(self, prompt, target, *, position: int = -1, baseline="mean"):
        """Direct logit attribution: a DataFrame with one line per component ("embed", "0.attn", "0.mlp",
        ..., "bias") and its ``contribution`` to ``logit[target] - mean logit`` (baseline="mean") or
        ``- logit[baseline]`` (a second token) at ``position``, through the final norm frozen at the output
        row's statistics; the lines sum to the output row's logit difference (before any soft-cap). See
        ``logitlens.attribution``.

        Example:
            >>> df = lens.attribute("The Eiffel Tower is in the city of", " Paris")
        """
        from logitlens.tasks.attribution import attribute

        return attribute(self, prompt, target, position=position, baseline=baseline)


def _tuned_lens(tuned_lens, lens: Lens | None) -> TunedLens:
    """``tuned_lens=``: a TunedLens as it is, or a folder read by ``TunedLens.load`` (either layout)."""
    if lens is not None:
        raise LogitLensError(
            "give either tuned_lens= or lens=, not both (a TunedLens can be passed as lens= for one run)"
        )
    if isinstance(tuned_lens, TunedLens):
        return tuned_lens
    if isinstance(tuned_lens, str | Path) and str(tuned_lens).strip():
        return TunedLens.load(tuned_lens)
    raise LogitLensError(
        f"tuned_lens must be a folder (config.json + translators.safetensors or params.pt) or a "
        f"logitlens.TunedLens, got {type(tuned_lens).__name__} {tuned_lens!r}"
    )


def _parse_dtype(dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise LogitLensError(f"unknown dtype '{dtype}'; choose one of: float32, bfloat16, float16, auto")
    return DTYPES[dtype]
