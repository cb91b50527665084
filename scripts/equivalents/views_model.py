"""Equivalent mutants of ``views/model`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

ZIP_SAME_LENGTH = (
    "zip(strict=...) of lists that always have the same length: compare_model checks the prompt indices' "
    "count against the results before, ``prompts`` is made from ``results`` one per result, and "
    "``column_tokens(prompt)`` is one token per ``columns(prompt)``; strict or not, zip pairs the same items"
)

_same(
    "views/model",
    ZIP_SAME_LENGTH,
    (
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=True)]",
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=None)]",
    ),
    (
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=True)]",
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, )]",
    ),
    (
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=True)]",
        "prompts = [check_prompt(r, p) for r, p in zip(results, prompt_list, strict=False)]",
    ),
    (
        "for i, (r, p) in enumerate(zip(results, prompts, strict=True))",
        "for i, (r, p) in enumerate(zip(results, prompts, strict=None))",
    ),
    (
        "for i, (r, p) in enumerate(zip(results, prompts, strict=True))",
        "for i, (r, p) in enumerate(zip(results, prompts, ))",
    ),
    (
        "for i, (r, p) in enumerate(zip(results, prompts, strict=True))",
        "for i, (r, p) in enumerate(zip(results, prompts, strict=False))",
    ),
    (
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)",
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), )",
    ),
    (
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)",
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=False)",
    ),
    (
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=True)",
        "for j, tok in zip(result.columns(prompt), result.column_tokens(prompt), strict=None)",
    ),
)

_same(
    "views/model",
    "compare_model: the panels without a target are the built-in KL to final and entropy, whose labels hold "
    "no '{target}', so naming a target in their label changes no text; the per-target panel exists only when "
    "targets is not None",
    (
        "label = stat_label(results[0], s, targets[0] if s.per_target and targets is not None else None)",
        "label = stat_label(results[0], s, targets[0] if s.per_target or targets is not None else None)",
    ),
)

_same(
    "views/model",
    "menu_entries reads ``targets`` only as a truth value (``if targets:``): None and False are the same",
    (
        "menu = [m.stat for m in menu_entries(results[0], targets=False) if m.stat in common]",
        "menu = [m.stat for m in menu_entries(results[0], targets=None) if m.stat in common]",
    ),
)

_same(
    "views/model",
    "compare_model: a shared target's index targets[i] is target_index(results[i], target), and heatmap_model "
    "resolves ``target`` with the same target_index, so both give the same grid (same target index)",
    (
        "heatmap_model(r, p, spec.name, targets[i] if targets is not None and spec.per_target else target)",
        "heatmap_model(r, p, spec.name, targets[i] if (targets is not None and spec.per_target) and False else target)",
    ),
)

_same(
    "views/model",
    "trajectory_model's branch for statistics without targets: curve reads its target argument only for "
    "per-target statistics, so 0, 1 or None draw the same curve",
    ("curve(result, p, spec.name, 0, position),", "curve(result, p, spec.name, None, position),"),
    ("curve(result, p, spec.name, 0, position),", "curve(result, p, spec.name, 1, position),"),
)

_same(
    "views/model",
    "hover records' sort key: statistics without a target get any negative key and target indices are >= 0, "
    "so -1 and -2 give the same stable order",
    (
        "planes.sort(key=lambda p: -1 if p[1] is None else p[1])  # statistics without targets first, stable",
        "planes.sort(key=lambda p: -2 if p[1] is None else p[1])  # statistics without targets first, stable",
    ),
)

_same(
    "views/model",
    "stat_label reads the result only to name a target; with target None it never touches it",
    (
        "out = [MenuEntry(s.name, None, stat_label(result, s, None)) for s in stats if not s.per_target]",
        "out = [MenuEntry(s.name, None, stat_label(None, s, None)) for s in stats if not s.per_target]",
    ),
)

_same(
    "views/model",
    "stat_grid's nats range guard never runs: zmin = min(0, smallest value) <= 0 while zmax is always > 0 (a "
    "positive largest value, a positive KL quantile, or the default 1.0), so zmax <= zmin is never true",
    ("if zmax <= zmin:", "if zmax < zmin:"),
    ("zmax = zmin + 1.0", "zmax = None"),
    ("zmax = zmin + 1.0", "zmax = zmin - 1.0"),
    ("zmax = zmin + 1.0", "zmax = zmin + 2.0"),
)

_same(
    "views/model",
    "numpy's astype(None) is astype(float64), the same as astype(float)",
    ("return t.numpy().astype(float)", "return t.numpy().astype(None)"),
)
