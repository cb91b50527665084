"""Equivalent mutants of ``kernels`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "kernels",
    DEVICE_ONLY,
    (
        "ref = reference[start : start + m_chunk].float().to(logits.device)  # (m, V)",
        "ref = reference[start : start + m_chunk].float().to(None)  # (m, V)",
    ),
    ("ids = ids.to(x.device)", "ids = ids.to(None)"),
    ("empty = torch.zeros(m, n_rows, 0, device=x.device)", "empty = torch.zeros(m, n_rows, 0, device=None)"),
    ("empty = torch.zeros(m, n_rows, 0, device=x.device)", "empty = torch.zeros(m, n_rows, 0, )"),
    ("nxt = next_ids.to(x.device)", "nxt = next_ids.to(None)"),
)

_same(
    "kernels",
    DEFAULT_ARG,
    (
        'ce = torch.where((nxt >= 0).unsqueeze(-1), ce, torch.full_like(ce, float("nan")))',
        'ce = torch.where((nxt >= 0).unsqueeze(+1), ce, torch.full_like(ce, float("nan")))',
    ),
    (
        "top_logp, top_ids = logp.topk(top_k, dim=-1)  # (m, R, k)",
        "top_logp, top_ids = logp.topk(top_k, )  # (m, R, k)",
    ),
)

_same(
    "kernels",
    'float() parses "NAN" as "nan"',
    (
        'ce = torch.where((nxt >= 0).unsqueeze(-1), ce, torch.full_like(ce, float("nan")))',
        'ce = torch.where((nxt >= 0).unsqueeze(-1), ce, torch.full_like(ce, float("NAN")))',
    ),
)

_same(
    "kernels",
    "fit == n_rows takes either branch to the same plan: (fit // n_rows, n_rows) = (1, n_rows) = (1, fit)",
    ("if fit >= n_rows:", "if fit > n_rows:"),
)

_same(
    "kernels",
    "r_chunk == n_rows: the one group range(0, n_rows - 1) + [n_rows - 1] is every row, in order, as the "
    "all-rows branch decodes them",
    ("if r_chunk >= n_rows:", "if r_chunk > n_rows:"),
)

_same(
    "kernels",
    "the value is a torch.cat result, already contiguous: preserve_format (None) copies it as "
    "contiguous_format does",
    (
        "out[name] = value.detach().clone(memory_format=torch.contiguous_format)",
        "out[name] = value.detach().clone(memory_format=None)",
    ),
)

_same(
    "kernels",
    "not observable: torch sums fp32 by a cascade, within a few ulp (~1e-6 nats) of the float64 sum, and "
    "the result is cast to fp32 anyway; the normaliser's own fp32 error (torch.log_softmax, ~3e-4 on a "
    "flat 200k row: the xfail test in test_kernels_mutants.py) is far larger",
    (
        "entropy = -torch.special.xlogy(p, p).sum(-1, dtype=torch.float64)",
        "entropy = -torch.special.xlogy(p, p).sum(-1, dtype=None)",
    ),
    (
        "entropy = -torch.special.xlogy(p, p).sum(-1, dtype=torch.float64)",
        "entropy = -torch.special.xlogy(p, p).sum(-1, )",
    ),
    (
        "cross = torch.where(p_f > 0, p_f * logp, torch.zeros_like(logp)).sum(-1, dtype=torch.float64)",
        "cross = torch.where(p_f > 0, p_f * logp, torch.zeros_like(logp)).sum(-1, dtype=None)",
    ),
    (
        "cross = torch.where(p_f > 0, p_f * logp, torch.zeros_like(logp)).sum(-1, dtype=torch.float64)",
        "cross = torch.where(p_f > 0, p_f * logp, torch.zeros_like(logp)).sum(-1, )",
    ),
)
