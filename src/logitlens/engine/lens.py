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
from logitlens.engine.inputs import PromptInputs, Target, context_length, resolve_positions
from logitlens.engine.lenses import FunctionLens, IdentityLens, Lens
from logitlens.engine.plan import BatchPlan, Decode, batch_inputs, run_local, run_remote
from logitlens.engine.reduce import DEFAULT_BUDGET_BYTES, decode_logits
from logitlens.engine.result import LensResult
from logitlens.engine.tuned import TunedLens
from logitlens.errors import LogitLensError, first_line
from logitlens.model.architectures import Architecture
from logitlens.model.backends import Backend, HookBackend
from logitlens.model.backends.nnsight import wrap_model
from logitlens.model.decoder import Decoder, check_decoder, execution_device
from logitlens.model.discovery import architecture_for

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


class LogitLens:
    """The logit lens over a Hugging Face causal LM: decode every row through the model's own final norm and
    unembedding, reduced at once to statistics (a ``LensResult``).

    Building one checks the model (the decoded last block must equal the model's own logits on a probe
    input) unless ``check=False``.

    Args:
        model: a transformers causal LM, already loaded (or an nnsight ``LanguageModel``).
        tokenizer: its tokenizer; ``None`` when you pass token ids only.
        arch: an ``Architecture`` for this model only (default: the table's entry, or discovery).
        check: run the load-time self-check.
        budget_bytes: memory for decoding intermediates, in bytes (the CLI's ``--memory-budget``).
        batch_size: prompts per forward pass.
        name: the model's name in results and pictures (default: its config's ``_name_or_path``).
        lens: the ``Lens`` every run decodes through (default: ``IdentityLens``, the logit lens).
        backend: how rows are captured (default: forward hooks; nnsight for an nnsight model).
        tuned_lens: a ``TunedLens`` or its folder (either layout, see ``logitlens.engine.tuned``): every run
            then decodes through its translators (``meta["lens"] == "tuned"``). It is refused, in one line,
            when made for another model (block count, d_model, unembedding hash).
        check_hash: ``False`` skips the tuned lens's unembedding hash (never its shapes).

    Raises:
        LogitLensError: not a causal LM, a bad option, a tuned lens for another model, or a failed
            self-check.

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
        preflight: Callable[[Any, Any], None] | None = None,
        **kwargs,
    ) -> LogitLens:
        """Load a model and its tokenizer and wrap them.

        Args:
            name: "default" (the embedded SmolLM2-135M-Instruct, offline), a Hugging Face id or a local
                folder.
            dtype: "float32", "bfloat16", "float16", "auto" or a ``torch.dtype`` (statistics are fp32
                either way).
            device: "cpu", "cuda", "cuda:1", "mps" or "auto" (spread over the available devices).
            trust_remote_code: let a model's own Python code run (off by default).
            revision: a hub revision (branch, tag or commit).
            backend: "hooks" (forward hooks) or "nnsight" (nnsight traces; needs
                ``pip install 'logitlens[remote]'``).
            load_weights: ``False`` (nnsight only) builds the model on the meta device, for remote runs:
                nothing is downloaded but the config and tokenizer.
            device_map: "auto", "balanced", "sequential" or {module: device}: accelerate's placement of a
                model bigger than one device, with ``max_memory`` and ``offload_folder``.
            max_memory: per-device limits for ``device_map``, e.g. {0: "70GiB", "cpu": "200GiB"}.
            offload_folder: where accelerate offloads weights to disk.
            quantization: "int8" (torchao, CPU or GPU), "bnb-8bit" / "bnb-4bit" (CUDA) or a transformers
                quantisation config (see ``logitlens.model.loading``).
            preflight: ``fn(config, tokenizer)``, called once they are read and before the weights load, to
                refuse what needs no weights (the CLI checks --top-k and --positions there).
            **kwargs: go to ``LogitLens()`` (``tuned_lens=``, ``batch_size=``, ``budget_bytes=`` ...).

        Returns:
            The ``LogitLens``, self-checked.

        Raises:
            LogitLensError: an unknown model (in seconds: a missing folder, a name the hub does not have, an
                unreachable hub), a bad option, or a failed self-check.

        Example:
            >>> lens = LogitLens.from_pretrained("default")
            >>> lens = LogitLens.from_pretrained("Qwen/Qwen2.5-0.5B", dtype="bfloat16", device="auto")
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
        name, path, label = _model_source(name, revision)
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
            _before_weights(path, label, trust_remote_code, revision, device, tokenizer, kwargs, preflight)
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
        """The model's context in tokens (None: its config does not say)."""
        return context_length(self.model.config)

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
        return check_decoder(self.decoder, h_last, logits, discovered=self.arch_source == "discovered")

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
            namer=self._namer if self._namer.tokenizer is self.tokenizer else None,
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
        """Decode every row at every (or the chosen) position of each prompt.

        Args:
            prompts: str, list[str], list[list[int]] or a (B, T) LongTensor (see ``iter_run``).
            **kwargs: as ``iter_run``: ``top_k``, ``targets``, ``positions``, ``answers``, ``lens``,
                ``include_subblocks``, ``chat``, ``remote`` ...

        Returns:
            One ``LensResult`` (``iter_run``'s batches joined, prompts in the order given): ``top_ids`` and
            ``top_probs`` (N, R, P, k), ``entropy``, ``kl_to_final``, ``cross_entropy`` (N, R, P),
            ``target_probs`` / ``target_ranks`` (N, R, P, T), with answers ``answer_logprobs`` (N, R).

        Example:
            >>> res = lens.run(["The Eiffel Tower is in the city of"], top_k=5, targets=[" Paris"])
        """
        parts = list(self.iter_run(prompts, **kwargs))
        res = parts[0] if len(parts) == 1 else LensResult.concat(parts)
        order = sorted(range(res.n_prompts), key=res.prompt_index.__getitem__)
        return res if order == list(range(res.n_prompts)) else res.select(order)

    def stream(self, prompts, path, *, resume: bool = False, progress: bool = True, **kwargs):
        """Run prompts batch by batch into a file, each batch written as it finishes (memory stays flat).

        Args:
            prompts: as ``iter_run``; any number of them.
            path: the output, ``.parquet`` (one row group per batch, ``LensResult.to_arrow``'s columns) or
                ``.jsonl``.
            resume: continue a killed run (a changed prompt list or changed options are refused).
            progress: a progress bar on stderr.
            **kwargs: as ``iter_run``.

        Returns:
            The per-row aggregate over every prompt (see ``logitlens.tasks.stream``).

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

        Args:
            prompts: str, list[str], list[list[int]] or a (B, T) LongTensor with ``attention_mask`` (either
                padding side).
            top_k: tokens kept per (row, position).
            targets: tokens tracked at every position: strings (first token), ids, or a tuple/set of those
                whose mass is summed; see ``targets()``.
            positions: indices into each prompt (negative count from its end), e.g. [-1]; default: all.
            attention_mask: (B, T), with a tensor of prompts.
            truncate: keep the last tokens of a prompt longer than the context instead of failing.
            batch_size: prompts per forward pass (default: this object's).
            transform: a function (row index, (N, d)) -> (N, d) applied to every row but the output row.
            lens: a ``Lens`` for this run (default: this object's: the logit lens, or the tuned lens it was
                made with, ``tuned_lens=``).
            include_subblocks: add each block's "attn" row (after attention, before the MLP).
            answers: one answer per prompt (a string, token ids or None), appended to its prompt and
                teacher-forced in the same forward pass: ``answer_logprobs`` (N, R) is, per row, the sum over
                the answer's tokens of log p_row(a_i | prompt, a_<i); ``answer_probs`` / ``answer_ranks``
                (N, R) are the first answer token's probability and rank at the prompt's last position.
            chat: wrap each text prompt in the tokenizer's chat template (see ``encode``).
            prepend_bos: add (True) or remove (False) a leading BOS token; default: as the tokenizer does.
            remote: True runs the whole lens on NDIF through nnsight (API key: NDIF_API_KEY or
                `nnsight login`), "local" runs nnsight's simulation of that request here; only the
                statistics come back, and the self-check runs on the server's side (the logit lens only,
                without answers).

        Yields:
            One ``LensResult`` per batch; its ``prompt_index`` says which input prompts it holds, its
            ``tokens`` show exactly what the model saw.

        Example:
            >>> for part in lens.iter_run(["a", "b", "c"], batch_size=2):
            ...     print(part.prompt_index)
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
        """Raw fp32 logits of every row for one prompt. Opt-in: it holds the whole (R, T, V) tensor.

        Args:
            prompt: one prompt (text or token ids).
            transform: as ``iter_run``.
            lens: as ``iter_run``.
            include_subblocks: add the "attn" rows.
            chat: as ``encode``.
            prepend_bos: as ``encode``.

        Returns:
            A (rows, positions, vocab) fp32 tensor.

        Example:
            >>> lens.layer_logits("Hello").shape   # (31, 2, 49152) on the default model
        """
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
        """Direct logit attribution: which components wrote ``target``'s logit at ``position``.

        The final norm is frozen at the output row's statistics; the lines sum to the output row's logit
        difference (before any soft-cap). See ``logitlens.tasks.attribution``.

        Args:
            prompt: one prompt (text or token ids).
            target: one token (a string that tokenises to one token, or an id).
            position: the position (negative counts from the end).
            baseline: "mean" (``logit[target] - mean logit``) or a second token (``- logit[baseline]``).

        Returns:
            A DataFrame with one line per component ("embed", "0.attn", "0.mlp", ..., "bias"): ``component``,
            ``kind``, ``contribution``, ``cumulative``; ``df.attrs`` holds the summary, ``logit_diff``,
            ``sum_error`` and the linearisation in words.

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


def _model_source(name, revision) -> tuple[str, str, str]:
    """(name, where to load it from, its label): the default model's converted folder, or a checked id or
    folder (a missing folder or an unknown hub name answers in a second, not after a minute of retries)."""
    if name == "default":
        from logitlens.model.default_model import DEFAULT_NAME, model_dir

        return name, str(model_dir()), DEFAULT_NAME
    from logitlens.model.sources import check_source

    name = str(name) if isinstance(name, Path) else name  # a pathlib folder works as well
    if not isinstance(name, str) or not name.strip():
        raise LogitLensError("give a model: 'default', a Hugging Face id or a local folder")
    check_source(name, revision)
    return name, name, name


def _before_weights(path, label, trust_remote_code, revision, device, tokenizer, kwargs, preflight) -> None:
    """What needs only the config and tokenizer, refused before the weights load: a device this machine
    lacks, a tuned lens for another block count or width, and the caller's ``preflight`` checks."""
    from transformers import AutoConfig

    dev = str(device or "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise LogitLensError(f"device '{dev}' asked for, but CUDA is not available here; use --device cpu")
    if dev.startswith("mps") and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise LogitLensError(f"device '{dev}' asked for, but MPS is not available here; use --device cpu")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    tuned = kwargs.get("tuned_lens")
    if isinstance(tuned, TunedLens):
        tuned.check_shape(getattr(text, "num_hidden_layers", None), getattr(text, "hidden_size", None), label)
    if preflight is not None:
        preflight(config, tokenizer)


def _parse_dtype(dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise LogitLensError(f"unknown dtype '{dtype}'; choose one of: float32, bfloat16, float16, auto")
    return DTYPES[dtype]
