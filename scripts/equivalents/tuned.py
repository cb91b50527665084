"""Equivalent mutants of ``tuned`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "tuned",
    DEVICE_ONLY,
    (
        "return w.to(h.device), b.to(h.device)  # training: keep the graph",
        "return w.to(None), b.to(h.device)  # training: keep the graph",
    ),
    (
        "return w.to(h.device), b.to(h.device)  # training: keep the graph",
        "return w.to(h.device), b.to(None)  # training: keep the graph",
    ),
    (
        "self._cast = {key: (w.detach().to(h.device), b.detach().to(h.device))}",
        "self._cast = {key: (w.detach().to(None), b.detach().to(h.device))}",
    ),
    (
        "self._cast = {key: (w.detach().to(h.device), b.detach().to(h.device))}",
        "self._cast = {key: (w.detach().to(h.device), b.detach().to(None))}",
    ),
    ("s = sel.to(h.device)", "s = sel.to(None)"),
    ("idx = index.to(w.device)", "idx = index.to(None)"),
)

_same(
    "tuned",
    "the einsum's subscripts renamed consistently (upper-case letters are valid subscripts): the same "
    "contraction, the same result",
    (
        'moved = torch.einsum("mri,roi->mro", h.to(w.dtype), w[idx]) + b[idx]',
        'moved = torch.einsum("MRI,ROI->MRO", h.to(w.dtype), w[idx]) + b[idx]',
    ),
)

_same(
    "tuned",
    "cache only: with `or`, decoding without gradients takes the parameters (moved to h's device at each "
    "call) instead of the cached detached copies: the same values (on the CPU the copies are views of the "
    "same storage), and neither builds a graph (gradients off, or weights that need none); only the time "
    "of a copy to the GPU differs",
    (
        "if torch.is_grad_enabled() and w.requires_grad:",
        "if torch.is_grad_enabled() or w.requires_grad:",
    ),
)

_same(
    "tuned",
    "whitespace of config.json only: every reader (ours, the tuned-lens package's) parses the JSON, whose "
    "content is tested",
    *(
        ("text = json.dumps(config, indent=1)", f"text = json.dumps(config, {arg})")
        for arg in ("indent=None", "", "indent=2")
    ),
)
