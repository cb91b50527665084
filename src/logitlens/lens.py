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
from .backends.nnsight import NNsightBackend, wrap_model
from .errors import LogitLensError, first_line
from .lenses import FunctionLens, IdentityLens, Lens
from .reduce import DEFAULT_BUDGET_BYTES, answer_logprobs, decode_logits, decode_stats
from .result import LensResult
from .rows import Row, default_rows
from .stats import REGISTRY
from .tokens import TokenNamer
from .tuned import TunedLens

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
        self._nnsight_backend: NNsightBackend | None = None  # for remote runs of a transformers model
        for what, value in (("batch_size", batch_size), ("budget_bytes", budget_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LogitLensError(f"{what} must be a positive integer, got {value!r}")
        self.budget_bytes = int(budget_bytes)
        self.batch_size = int(batch_size)
        self._namer = TokenNamer(tokenizer)
        # A model without weights here (nnsight's meta model, for remote runs) is checked on the server.
        here = getattr(self.backend, "runs_here", True)
        self.self_check_diff: float | None = self._self_check() if check and here else None

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
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype = _parse_dtype(dtype)
        if backend not in ("hooks", "nnsight"):
            raise LogitLensError(f"unknown backend {backend!r}; choose one of: hooks, nnsight")
        if not load_weights and backend != "nnsight":
            raise LogitLensError("load_weights=False needs backend='nnsight' (a model for remote runs)")
        if kwargs.get("tuned_lens") is not None:  # its folder is read before the model: a bad one fails fast
            kwargs["tuned_lens"] = _tuned_lens(kwargs["tuned_lens"], kwargs.get("lens"))
        if name == "default":
            from .default_model import DEFAULT_NAME, model_dir

            path, label = str(model_dir()), DEFAULT_NAME
        else:
            from .sources import check_source

            name = str(name) if isinstance(name, Path) else name  # a pathlib folder works as well
            if not isinstance(name, str) or not name.strip():
                raise LogitLensError("give a model: 'default', a Hugging Face id or a local folder")
            check_source(name, revision)  # one line in seconds, not a minute of hub retries
            path, label = name, name
        from .loading import import_quantizers, load_options

        import_quantizers()
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

        from .remote import require_nnsight

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
                    raise LogitLensError(f"prompt {i + 1} is empty: give some text")
                if self.tokenizer is None:
                    raise LogitLensError("text prompts need a tokenizer: LogitLens(model, tokenizer)")
                ids.append(self._tokenize(p, chat, prepend_bos))
                texts.append(p)
            elif isinstance(p, Sequence | torch.Tensor) and all(isinstance(t, int) for t in list(p)):
                ids.append([int(t) for t in p])
                texts.append(None)
            else:
                raise LogitLensError(
                    f"prompt {i + 1} is a {type(p).__name__}: give strings or lists of token ids"
                )
        return ids, texts

    def _tokenize(self, text: str, chat: bool, prepend_bos: bool | None) -> list[int]:
        """One text prompt's token ids, with the chat template and the BOS choice applied."""
        tok = self.tokenizer
        if chat:
            if not getattr(tok, "chat_template", None):
                raise LogitLensError(
                    f"the tokenizer of {self.name} has no chat template; leave out chat=True (--chat)"
                )
            text = tok.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
            ids = list(tok(text, add_special_tokens=False)["input_ids"])  # the template has its specials
        else:
            ids = list(tok(text)["input_ids"])
        bos = getattr(tok, "bos_token_id", None)
        if prepend_bos and (not ids or ids[0] != bos):
            if bos is None:
                raise LogitLensError(f"the tokenizer of {self.name} has no BOS token; leave out prepend_bos")
            ids = [bos, *ids]
        elif prepend_bos is False and bos is not None and ids and ids[0] == bos:
            ids = ids[1:]
        return ids

    def _check_ids(self, ids: list[list[int]], truncate: bool) -> list[list[int]]:
        vocab = self.decoder.vocab_size
        ctx = self.context_length
        out = []
        for i, seq in enumerate(ids):
            if not seq:
                raise LogitLensError(f"prompt {i + 1} is empty: it has no tokens")
            bad = [t for t in seq if not 0 <= t < vocab]
            if bad:
                raise LogitLensError(
                    f"prompt {i + 1} has token id {bad[0]} outside the vocabulary (0..{vocab - 1})"
                )
            if ctx is not None and len(seq) > ctx:
                if not truncate:
                    raise LogitLensError(
                        f"prompt {i + 1} has {len(seq)} tokens but the model's context is {ctx}; shorten it "
                        "or pass truncate=True (--truncate) to keep its last tokens"
                    )
                warnings.warn(f"prompt {i + 1}: kept the last {ctx} of {len(seq)} tokens", stacklevel=3)
                seq = seq[-ctx:]
            out.append(seq)
        return out

    def targets(self, targets) -> list[Target]:
        """Normalise targets: a string (its first token), a token id, or a list/tuple/set of those (summed),
        or a ready ``Target`` (such as ``logitlens.concept(...)``), kept as it is once its ids are checked."""
        if targets is None:
            return []
        if isinstance(targets, str | int | Target):
            targets = [targets]
        out = []
        for t in targets:
            if isinstance(t, Target):
                bad = [i for i in t.ids if not 0 <= i < self.decoder.vocab_size]
                if not t.ids or bad:
                    raise LogitLensError(
                        f"target {t.name!r} has {'token id ' + str(bad[0]) if bad else 'no tokens'}: build it "
                        f"with this model's tokenizer (vocabulary 0..{self.decoder.vocab_size - 1})"
                    )
                out.append(t)
                continue
            if isinstance(t, list | tuple | set | frozenset):
                members = [self._target_ids(x, single=False) for x in t]
                if not members:
                    raise LogitLensError("a target set is empty: give at least one token")
                ids = tuple(dict.fromkeys(i for m in members for i in m))
                name = "|".join(self._target_name(x, m[0]) for x, m in zip(t, members, strict=True))
            else:
                ids = self._target_ids(t, single=True)
                name = self._target_name(t, ids[0])
            out.append(Target(name=name, ids=ids))
        return out

    def _target_name(self, t: str | int, tracked: int) -> str:
        """A target's label: the string given, unless it has several tokens: then the token tracked."""
        if not isinstance(t, str):
            return self._namer(t)
        ids = self.tokenizer(t, add_special_tokens=False)["input_ids"]
        return t if len(ids) <= 1 else self.tokenizer.decode([tracked])

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
        if t.strip() == "":
            warnings.warn(
                f"target {t!r} is only whitespace: tracking that token; did you mean a word such as ' Paris'?",
                stacklevel=4,
            )
        if self.tokenizer is None:
            raise LogitLensError("string targets need a tokenizer: pass token ids instead")
        ids = list(self.tokenizer(t, add_special_tokens=False)["input_ids"])
        if not ids:
            raise LogitLensError(f"target {t!r} tokenises to nothing: give another string or a token id")
        if len(ids) > 1:
            pieces = self._namer.many(ids)
            warnings.warn(
                f"target {t!r} is {len(ids)} tokens {pieces}; tracking the first, {pieces[0]!r}, and "
                "labelling it so; to score the whole word, give it as a prompt's answer (--answer, "
                "run(answers=[...]))",
                stacklevel=4,
            )
        return (ids[0],)

    def answers(self, answers, n_prompts: int) -> list[tuple[str | None, tuple[int, ...]]]:
        """Normalise per-prompt answers: one string (tokenised without special tokens), list of token ids,
        or None (no answer) per prompt -> (readable name or None, token ids) per prompt."""
        if isinstance(answers, str) or (
            isinstance(answers, Sequence) and answers and all(isinstance(a, int) for a in answers)
        ):
            answers = [answers]
        if not isinstance(answers, Sequence) or isinstance(answers, bytes):
            raise LogitLensError("answers must be a list with one answer (string or token ids) per prompt")
        if len(answers) != n_prompts:
            raise LogitLensError(
                f"got {len(answers)} answers for {n_prompts} prompts; give one answer per prompt (None "
                "for a prompt without one)"
            )
        vocab = self.decoder.vocab_size
        out: list[tuple[str | None, tuple[int, ...]]] = []
        for i, a in enumerate(answers):
            if a is None:
                out.append((None, ()))
            elif isinstance(a, str):
                if a.strip() == "":
                    raise LogitLensError(
                        f"the answer of prompt {i + 1} is empty: give a word such as ' Paris' (mind the "
                        "leading space)"
                    )
                if self.tokenizer is None:
                    raise LogitLensError("string answers need a tokenizer: pass token ids instead")
                ids = tuple(self.tokenizer(a, add_special_tokens=False)["input_ids"])
                if not ids:
                    raise LogitLensError(f"the answer of prompt {i + 1} ({a!r}) tokenises to nothing")
                out.append((a, ids))
            elif (
                isinstance(a, Sequence | torch.Tensor)
                and len(a) > 0
                and all(isinstance(t, int) and not isinstance(t, bool) for t in list(a))
            ):
                bad = [t for t in a if not 0 <= t < vocab]
                if bad:
                    raise LogitLensError(
                        f"the answer of prompt {i + 1} has token id {bad[0]} outside the vocabulary "
                        f"(0..{vocab - 1})"
                    )
                ids = tuple(int(t) for t in a)
                out.append(("".join(self._namer.many(list(ids))), ids))
            else:
                raise LogitLensError(
                    f"the answer of prompt {i + 1} is a {type(a).__name__}: give a string, a list of token "
                    "ids or None"
                )
        return out

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
        from .stream import stream

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
        ids, texts = self.encode(prompts, attention_mask, chat=chat, prepend_bos=prepend_bos)
        ids = self._check_ids(ids, truncate)
        tgts = self.targets(targets)
        answer_list = None if answers is None else self.answers(answers, len(ids))
        ans = [a[1] for a in answer_list] if answer_list is not None else [()] * len(ids)
        ctx = self.context_length
        for i, (seq, a) in enumerate(zip(ids, ans, strict=True)):
            if ctx is not None and a and len(seq) + len(a) - 1 > ctx:
                raise LogitLensError(
                    f"prompt {i + 1} with its answer has {len(seq) + len(a) - 1} tokens but the model's "
                    f"context is {ctx}; shorten the prompt or the answer"
                )
        cols = _resolve_positions(ids, positions)  # per prompt: input position of each column
        chunk_fn = use.chunk_transform(rows, output_row=len(rows) - 1)
        half = self.decoder.dtype in (torch.float16, torch.bfloat16)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
        meta = self._meta(top_k, use)
        if remote:
            if chunk_fn is not None or answer_list is not None:
                what = "answers" if answer_list is not None else f"the {use.name!r} lens"
                raise LogitLensError(
                    f"remote runs decode with the logit lens, without answers: run {what} here"
                )
            yield from self._iter_remote(ids, texts, cols, rows, tgts, top_k, order, bs, meta, remote)
            return
        if not getattr(self.backend, "runs_here", True):
            raise LogitLensError(
                "this nnsight model has no weights here (built for remote runs): pass remote=True "
                "(NDIF) or remote='local', or load it with its weights (dispatch=True)"
            )
        for start in range(0, len(ids), bs):
            batch = order[start : start + bs]
            # an answer is appended to its prompt (all but its last token are inputs); the answer's cells
            # are the positions before each of its tokens, gathered after the prompt's own columns
            seqs = {i: ids[i] + list(ans[i][:-1]) for i in batch}
            gathers = {i: cols[i] + [len(ids[i]) - 1 + t for t in range(len(ans[i]))] for i in batch}
            captured = self._capture(batch, seqs, gathers, rows)  # (B, R, P + A, d)
            cells = [(b, j) for b, i in enumerate(batch) for j in range(len(cols[i]))]
            a_cells = [(b, len(cols[i]) + t) for b, i in enumerate(batch) for t in range(len(ans[i]))]
            bi = torch.tensor([c[0] for c in cells], device=captured.device)
            ji = torch.tensor([c[1] for c in cells], device=captured.device)
            flat = captured[bi, :, ji]  # (M, R, d), a copy
            a_flat = None
            if a_cells:
                abi = torch.tensor([c[0] for c in a_cells], device=captured.device)
                aji = torch.tensor([c[1] for c in a_cells], device=captured.device)
                a_flat = captured[abi, :, aji]  # (M_a, R, d)
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
            res = self._batch_result(batch, ids, texts, cols, cells, st, rows, tgts, meta)
            if answer_list is not None:
                res = self._with_answers(res, batch, answer_list, a_flat, chunk_fn, half)
            yield res

    def _with_answers(self, res, batch, answer_list, a_flat, chunk_fn, half) -> LensResult:
        """Add one batch's teacher-forced answer statistics (N, R) to its result."""
        n, n_rows = len(batch), res.n_rows
        logprobs = torch.full((n, n_rows), float("nan"))
        probs = torch.full((n, n_rows), float("nan"))
        ranks = torch.full((n, n_rows), -1, dtype=torch.long)
        if a_flat is not None:
            a_ids = torch.tensor([t for i in batch for t in answer_list[i][1]], dtype=torch.long)
            lp, rk = answer_logprobs(
                a_flat,
                self.decoder.logits,
                a_ids,
                vocab_size=self.decoder.vocab_size,
                budget_bytes=self.budget_bytes,
                half_precision=half,
                transform=chunk_fn,
            )  # (M_a, R) each
            start = 0
            for b, i in enumerate(batch):
                a = len(answer_list[i][1])
                if a:
                    logprobs[b] = lp[start : start + a].double().sum(0).float()
                    probs[b] = lp[start].exp()
                    ranks[b] = rk[start]
                start += a
        vocab = dict(res.vocab)
        for i in batch:
            vocab.update({t: self._namer(t) for t in answer_list[i][1]})
        return res.replace(
            answers=[answer_list[i][0] for i in batch],
            answer_ids=[list(answer_list[i][1]) for i in batch],
            answer_logprobs=logprobs,
            answer_probs=probs,
            answer_ranks=ranks,
            vocab=dict(sorted(vocab.items())),
        )

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

    def _iter_remote(self, ids, texts, cols, rows, tgts, top_k, order, bs, meta, remote):
        """iter_run's batches with capture, decode and reduction inside nnsight traces (NDIF or here)."""
        backend = self._remote_backend()
        meta = {**meta, "backend": backend.name}
        for start in range(0, len(ids), bs):
            batch = order[start : start + bs]
            cells = [(b, j) for b, i in enumerate(batch) for j in range(len(cols[i]))]
            next_ids = torch.tensor(
                [_next_id(ids[batch[b]], cols[batch[b]][j]) for b, j in cells], dtype=torch.long
            )
            input_ids, mask, gather = self._batch_inputs(batch, ids, cols)
            st = backend.remote_stats(
                input_ids, mask, gather, rows, cells, next_ids, [t.ids for t in tgts], top_k,
                self.budget_bytes, None, remote,
            )  # fmt: skip
            yield self._batch_result(batch, ids, texts, cols, cells, st, rows, tgts, meta)

    def _remote_backend(self) -> NNsightBackend:
        """The backend that runs remote traces: this one if it can, else nnsight over the same model."""
        if isinstance(self.backend, NNsightBackend):
            return self.backend
        if self._nnsight_backend is None:
            from .backends.nnsight import nnsight_backend

            self._nnsight_backend = nnsight_backend(self.model, self.decoder, self.tokenizer)
        return self._nnsight_backend

    def _capture(self, batch: list[int], ids, cols, rows: Sequence[Row]) -> torch.Tensor:
        """Right-padded forward of some prompts; (B, R, P, d) residual rows at their columns."""
        dev = self.input_device
        input_ids, mask, gather = self._batch_inputs(batch, ids, cols)
        return self.backend.capture(input_ids.to(dev), mask.to(dev), gather.to(dev), rows)

    def _batch_inputs(self, batch: list[int], ids, cols) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) (B, T) right-padded and gather (B, P) of some prompts, on the CPU."""
        t_max = max(len(ids[i]) for i in batch)
        p_max = max(len(cols[i]) for i in batch)
        input_ids = torch.zeros((len(batch), t_max), dtype=torch.long)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        gather = torch.zeros((len(batch), p_max), dtype=torch.long)
        for b, i in enumerate(batch):
            input_ids[b, : len(ids[i])] = torch.tensor(ids[i])
            mask[b, : len(ids[i])] = 1
            gather[b, : len(cols[i])] = torch.tensor(cols[i])
        return input_ids, mask, gather

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
        ids = self._check_ids(ids, truncate=False)
        cols = [list(range(len(ids[0])))]
        rows = self.rows(include_subblocks)
        use = self._lens_for(lens, transform)
        fn = use.chunk_transform(rows, output_row=len(rows) - 1)  # refusing these rows: before any work
        captured = self._capture([0], ids, cols, rows)[0]  # (R, T, d)
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
        from .attribution import attribute

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
                f"prompt {i + 1}: the attention mask has holes; only left or right padding works"
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
    repeated = [p for k, p in enumerate(positions) if p in positions[:k]]
    if repeated:
        raise LogitLensError(f"position {repeated[0]} is given twice; give each position once")
    warned = False
    out = []
    for i, seq in enumerate(ids):
        cols: list[int] = []
        for p in positions:
            q = p + len(seq) if p < 0 else p
            if not 0 <= q < len(seq):
                raise LogitLensError(
                    f"position {p} is out of range for prompt {i + 1}, which has {len(seq)} tokens"
                )
            if q in cols and not warned:
                warnings.warn(
                    f"positions {positions[cols.index(q)]} and {p} are both position {q} of prompt {i + 1} "
                    f"({len(seq)} token{'s' if len(seq) != 1 else ''}): it is decoded twice",
                    stacklevel=4,
                )
                warned = True
            cols.append(q)
        out.append(cols)
    return out


def _next_id(seq: list[int], pos: int) -> int:
    return seq[pos + 1] if pos + 1 < len(seq) else -1
