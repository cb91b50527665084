"""Equivalent mutants of ``reduce`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "reduce",
    DEVICE_ONLY,
    ("nxt = next_ids.to(dev)", "nxt = next_ids.to(None)"),
    ("dev = logits.device", "dev = None"),
    (
        "top_ids, top_probs, final_probs, entropy, kl, ce, agrees, t_probs, t_ranks, extras, m, n_rows, dev",
        "top_ids, top_probs, final_probs, entropy, kl, ce, agrees, t_probs, t_ranks, extras, m, n_rows, None",
    ),
    (
        "best = logits.index_select(-1, ids.to(dev)).amax(-1, keepdim=True)  # (m, R, 1)",
        "best = logits.index_select(-1, ids.to(None)).amax(-1, keepdim=True)  # (m, R, 1)",
    ),
    (
        "t_probs = [e.index_select(-1, ids.to(dev)).sum(-1) * inv for ids in targets]  # summed mass of a set",
        "t_probs = [e.index_select(-1, ids.to(None)).sum(-1) * inv for ids in targets]  # summed mass of a set",
    ),
    ("empty_f = torch.zeros(m, n_rows, 0, device=dev)", "empty_f = torch.zeros(m, n_rows, 0, device=None)"),
    ("empty_f = torch.zeros(m, n_rows, 0, device=dev)", "empty_f = torch.zeros(m, n_rows, 0, )"),
)

_same(
    "reduce",
    OUT_BUFFER,
    ("out = torch.empty_like(logits) if out is None else out", "out = None"),
    (
        "out = torch.empty_like(logits) if out is None else out",
        "out = torch.empty_like(logits) if (out is None) and False else out",
    ),
    (
        "out = torch.empty_like(logits) if out is None else out",
        "out = torch.empty_like(logits) if (out is None) or True else out",
    ),
    (
        "out = torch.empty_like(logits) if out is None else out",
        "out = torch.empty_like(logits) if out is not None else out",
    ),
    (
        "above = torch.gt(logits, best, out=out)  # (m, R, V) 0/1 in fp32: exact counts up to 2^24",
        "above = torch.gt(logits, best, out=None)  # (m, R, V) 0/1 in fp32: exact counts up to 2^24",
    ),
    (
        "above = torch.gt(logits, best, out=out)  # (m, R, V) 0/1 in fp32: exact counts up to 2^24",
        "above = torch.gt(logits, best, )  # (m, R, V) 0/1 in fp32: exact counts up to 2^24",
    ),
    (
        "y = torch.add(top_vals[..., :1] * -LOG2E, logits, alpha=LOG2E, out=logits)  # in place: (m, R, V) <= 0",
        "y = torch.add(top_vals[..., :1] * -LOG2E, logits, alpha=LOG2E, out=None)  # in place: (m, R, V) <= 0",
    ),
    (
        "y = torch.add(top_vals[..., :1] * -LOG2E, logits, alpha=LOG2E, out=logits)  # in place: (m, R, V) <= 0",
        "y = torch.add(top_vals[..., :1] * -LOG2E, logits, alpha=LOG2E, )  # in place: (m, R, V) <= 0",
    ),
    (
        "e = torch.exp2(y, out=out)  # (m, R, V) unnormalised probabilities, 1 at the top token",
        "e = torch.exp2(y, out=None)  # (m, R, V) unnormalised probabilities, 1 at the top token",
    ),
    (
        "e = torch.exp2(y, out=out)  # (m, R, V) unnormalised probabilities, 1 at the top token",
        "e = torch.exp2(y, )  # (m, R, V) unnormalised probabilities, 1 at the top token",
    ),
)

_same(
    "reduce",
    DEFAULT_ARG,
    (
        '(nxt >= 0).unsqueeze(-1), ce.squeeze(-1) * LN2, torch.full_like(ce[..., 0], float("nan"))',
        '(nxt >= 0).unsqueeze(+1), ce.squeeze(-1) * LN2, torch.full_like(ce[..., 0], float("nan"))',
    ),
    (
        "total[redo] = torch.where(bad.isnan(), 0.0, bad).sum(-1)",
        "total[redo] = torch.where(bad.isnan(), 0.0, bad).sum(+1)",
    ),
    (
        "best = blocks.amax(-1).topk(k, dim=-1).indices  # (n, k) blocks holding the top k",
        "best = blocks.amax(-1).topk(k, ).indices  # (n, k) blocks holding the top k",
    ),
    (
        "best = blocks.amax(-1).topk(k, dim=-1).indices  # (n, k) blocks holding the top k",
        "best = blocks.amax(-1).topk(k, dim=+1).indices  # (n, k) blocks holding the top k",
    ),
    (
        "values, idx = cand.topk(k, dim=-1, sorted=True)  # (n, k)",
        "values, idx = cand.topk(k, sorted=True)  # (n, k)",
    ),
    (
        "values, idx = cand.topk(k, dim=-1, sorted=True)  # (n, k)",
        "values, idx = cand.topk(k, dim=-1, )  # (n, k)",
    ),
    ("return x.topk(k, dim=-1, sorted=True)", "return x.topk(k, sorted=True)"),
    ("return x.topk(k, dim=-1, sorted=True)", "return x.topk(k, dim=-1, )"),
    (
        "values, idx = cand.topk(k, dim=-1, sorted=True)  # (n, k)",
        "values, idx = cand.topk(k, dim=+1, sorted=True)  # (n, k)",
    ),
)

_same(
    "reduce",
    "the two-level top-k is a CPU speed-up that is exact (same values and ids as x.topk up to the order of "
    "ties, which topk leaves open too): taking the plain topk instead, or the block path on another device, "
    "changes no number",
    *(
        ('b = _topk_block(vocab, k) if x.device.type == "cpu" else None', after)
        for after in (
            'b = _topk_block(vocab, k) if x.device.type == "XXcpuXX" else None',
            'b = _topk_block(vocab, k) if x.device.type == "CPU" else None',
            "b = None",
            'b = _topk_block(vocab, k) if (x.device.type == "cpu") and False else None',
            'b = _topk_block(vocab, k) if (x.device.type == "cpu") or True else None',
            'b = _topk_block(vocab, k) if x.device.type != "cpu" else None',
        )
    ),
)

_same(
    "reduce",
    "the block path runs only for k <= 32, and torch's CPU topk returns those few values sorted even with "
    "sorted=False (checked with torch 2.13 for every block length _topk_block picks); k > 32 takes the "
    "plain topk, whose sorted=False is killed by test_plain_topk_path_is_sorted_and_matches_float64",
    (
        "values, idx = cand.topk(k, dim=-1, sorted=True)  # (n, k)",
        "values, idx = cand.topk(k, dim=-1, sorted=False)  # (n, k)",
    ),
)

_same(
    "reduce",
    'float() parses "NAN" as "nan"',
    (
        '(nxt >= 0).unsqueeze(-1), ce.squeeze(-1) * LN2, torch.full_like(ce[..., 0], float("nan"))',
        '(nxt >= 0).unsqueeze(-1), ce.squeeze(-1) * LN2, torch.full_like(ce[..., 0], float("NAN"))',
    ),
)

_same(
    "reduce",
    "redoing the sum for every valid row too gives the same sums (no NaN term in them); an invalid row "
    "(NaN/inf logits) is NaN anyway through its NaN normaliser log2s",
    ("redo = total.isnan() & valid", "redo = total.isnan() | valid"),
)

_same(
    "reduce",
    "every key is a registry name (the built-ins, and extra_statistics() come from REGISTRY), so the "
    "condition is always true",
    (
        "return Stats({k: v.to(REGISTRY[k].dtype).cpu() if k in REGISTRY else v.cpu() for k, v in out.items()})",
        "return Stats({k: v.to(REGISTRY[k].dtype).cpu() if (k in REGISTRY) or True else v.cpu() for k, v in "
        "out.items()})",
    ),
)

_same(
    "reduce",
    "differs only when n_rows * vocab is 0 (nothing to decode): a chunk size for no logits at all",
    (
        "return max(1, budget_bytes // max(1, n_rows * per_vector))",
        "return max(1, budget_bytes // max(2, n_rows * per_vector))",
    ),
)
