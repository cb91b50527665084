"""Input preparation: prompts, targets and answers as token ids, checked against the model's vocabulary and
context before any model work. Needs a tokenizer, not a model: testable on its own.

Example:
    >>> prep = PromptInputs(tokenizer, vocab_size=49152, context_length=8192, name="SmolLM2-135M")
    >>> ids, texts = prep.encode(["The Eiffel Tower is in"])
    >>> prep.targets([" Paris", (" Rome", " Paris")])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from logitlens.core.tokens import TokenNamer
from logitlens.errors import LogitLensError

__all__ = [
    "CONTEXT_ATTRS",
    "PromptInputs",
    "Target",
    "context_length",
    "next_id",
    "resolve_positions",
    "unpad",
]


CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")


def context_length(config) -> int | None:
    """The model's context in tokens, from its (text) config; None when the config does not say."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in CONTEXT_ATTRS:
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


__all__ = [
    "CONTEXT_ATTRS",
    "PromptInputs",
    "Target",
    "context_length",
    "next_id",
    "resolve_positions",
    "unpad",
]


@dataclass(frozen=True)
class Target:
    """A token (or a set of tokens whose probability mass is summed) tracked across rows.

    ``run(targets=...)`` makes them from strings (first token), ids, or tuples/sets of those;
    ``logitlens.concept`` builds one from words.

    Attributes:
        name: the label in results, tables and plots.
        ids: the token ids whose probability is summed (rank: the best one's).

    Example:
        >>> lens.run("The capital of France is", targets=[Target("paris", (12, 34))])   # ids of your tokenizer
    """

    name: str
    ids: tuple[int, ...]


class PromptInputs:
    """Turns what a user passes (text, ids, a padded tensor, targets, answers) into checked token ids.

    tokenizer: a transformers tokenizer or None (ids only); vocab_size: the unembedding's rows;
    context_length: the model's context (None: unknown); name: the model's name, for messages.
    """

    def __init__(
        self,
        tokenizer,
        *,
        vocab_size: int,
        context_length: int | None = None,
        name: str = "the model",
        namer: TokenNamer | None = None,
    ):
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        self.context_length = context_length
        self.name = name
        # a namer of the same tokenizer (its cache kept across runs); building one reads 2,000 tokens
        self.namer = namer if namer is not None else TokenNamer(tokenizer)

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
            return unpad(prompts, attention_mask), [None] * (1 if prompts.dim() == 1 else len(prompts))
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

    def check_ids(self, ids: list[list[int]], truncate: bool) -> list[list[int]]:
        vocab = self.vocab_size
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
                warnings.warn(f"prompt {i + 1}: kept the last {ctx} of {len(seq)} tokens", stacklevel=4)
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
                bad = [i for i in t.ids if not 0 <= i < self.vocab_size]
                if not t.ids or bad:
                    raise LogitLensError(
                        f"target {t.name!r} has {'token id ' + str(bad[0]) if bad else 'no tokens'}: build it "
                        f"with this model's tokenizer (vocabulary 0..{self.vocab_size - 1})"
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
            return self.namer(t)
        ids = self.tokenizer(t, add_special_tokens=False)["input_ids"]
        return t if len(ids) <= 1 else self.tokenizer.decode([tracked])

    def _target_ids(self, t, single: bool) -> tuple[int, ...]:
        vocab = self.vocab_size
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
                stacklevel=5,
            )
        if self.tokenizer is None:
            raise LogitLensError("string targets need a tokenizer: pass token ids instead")
        ids = list(self.tokenizer(t, add_special_tokens=False)["input_ids"])
        if not ids:
            raise LogitLensError(f"target {t!r} tokenises to nothing: give another string or a token id")
        if len(ids) > 1:
            pieces = self.namer.many(ids)
            warnings.warn(
                f"target {t!r} is {len(ids)} tokens {pieces}; tracking the first, {pieces[0]!r}, and "
                "labelling it so; to score the whole word, give it as a prompt's answer (--answer, "
                "run(answers=[...]))",
                stacklevel=5,
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
        vocab = self.vocab_size
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
                out.append(("".join(self.namer.many(list(ids))), ids))
            else:
                raise LogitLensError(
                    f"the answer of prompt {i + 1} is a {type(a).__name__}: give a string, a list of token "
                    "ids or None"
                )
        return out


def unpad(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
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


def resolve_positions(ids: list[list[int]], positions: Sequence[int] | None) -> list[list[int]]:
    """Per prompt, the input position of each column, in position order: ``positions`` (negative from the
    end) or all."""
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
        out.append(sorted(cols))  # columns in position order, whatever order the positions were given in
    return out


def next_id(seq: list[int], pos: int) -> int:
    """The token after ``pos`` in ``seq``; -1 at the last position."""
    return seq[pos + 1] if pos + 1 < len(seq) else -1
