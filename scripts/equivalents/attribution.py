"""Equivalent mutants of ``attribution`` (read by scripts/mutate.py, which provides ``_same`` and the shared
reasons: DEVICE_ONLY, OUT_BUFFER, DEFAULT_ARG)."""

_same(
    "attribution",
    DEVICE_ONLY,
    ("dev = decoder.device", "dev = None"),
    (
        "V = torch.stack([c[3] for c in comps]).to(dev)  # (C, d) fp32",
        "V = torch.stack([c[3] for c in comps]).to(None)  # (C, d) fp32",
    ),
    (
        "s = norm.scale(x_final.to(dev).unsqueeze(0))  # (1, 1) the output row's frozen statistic",
        "s = norm.scale(x_final.to(None).unsqueeze(0))  # (1, 1) the output row's frozen statistic",
    ),
    (
        "b_norm = norm.bias.float().to(dev) if norm.bias is not None else None",
        "b_norm = norm.bias.float().to(None) if norm.bias is not None else None",
    ),
    ("dev = lens.input_device", "dev = None"),
    (
        "input_ids = torch.tensor([ids], dtype=torch.long, device=dev)",
        "input_ids = torch.tensor([ids], dtype=torch.long, device=None)",
    ),
    (
        "input_ids = torch.tensor([ids], dtype=torch.long, device=dev)",
        "input_ids = torch.tensor([ids], dtype=torch.long, )",
    ),
    (
        "gather = torch.tensor([[pos]], dtype=torch.long, device=dev)",
        "gather = torch.tensor([[pos]], dtype=torch.long, device=None)",
    ),
    (
        "gather = torch.tensor([[pos]], dtype=torch.long, device=dev)",
        "gather = torch.tensor([[pos]], dtype=torch.long, )",
    ),
    (
        "attn[index] = block_hidden(output)[0, pos].detach().float().to(decoder.device)",
        "attn[index] = block_hidden(output)[0, pos].detach().float().to(None)",
    ),
    (
        "captured = capture_rows(model, decoder, rows, input_ids, mask, gather, out_device=decoder.device)",
        "captured = capture_rows(model, decoder, rows, input_ids, mask, gather, out_device=None)",
    ),
    (
        "captured = capture_rows(model, decoder, rows, input_ids, mask, gather, out_device=decoder.device)",
        "captured = capture_rows(model, decoder, rows, input_ids, mask, gather, )",
    ),
    ("a = attn[i].to(h.device)", "a = attn[i].to(None)"),
    (
        "bias = None if m.bias is None else m.bias.float().to(x.device)",
        "bias = None if m.bias is None else m.bias.float().to(None)",
    ),
    (
        "x = F.linear(x, m.weight.float().to(x.device), bias)",
        "x = F.linear(x, m.weight.float().to(None), bias)",
    ),
    (
        "x = h_last.to(decoder.device).unsqueeze(0).unsqueeze(0)  # (1, 1, d)",
        "x = h_last.to(None).unsqueeze(0).unsqueeze(0)  # (1, 1, d)",
    ),
)

_same(
    "attribution",
    "torch.tensor of Python ints is int64 (torch.long) already: dtype=torch.long, dtype=None and no dtype make "
    "the same tensor",
    (
        "input_ids = torch.tensor([ids], dtype=torch.long, device=dev)",
        "input_ids = torch.tensor([ids], dtype=None, device=dev)",
    ),
    (
        "input_ids = torch.tensor([ids], dtype=torch.long, device=dev)",
        "input_ids = torch.tensor([ids], device=dev)",
    ),
    (
        "gather = torch.tensor([[pos]], dtype=torch.long, device=dev)",
        "gather = torch.tensor([[pos]], dtype=None, device=dev)",
    ),
    (
        "gather = torch.tensor([[pos]], dtype=torch.long, device=dev)",
        "gather = torch.tensor([[pos]], device=dev)",
    ),
)

_same(
    "attribution",
    "FinalNorm.apply adds the bias only `if bias and self.bias is not None`: None is as false as False",
    (
        "normed = norm.apply(V, scale=s, bias=False)  # (C, d): centre(x_c) * s * g",
        "normed = norm.apply(V, scale=s, bias=None)  # (C, d): centre(x_c) * s * g",
    ),
)

_same(
    "attribution",
    "values has one entry per component by construction (one per line of comps, and the bias line is appended "
    "to both), so zip never meets lists of different lengths: strict=True, False or None iterate alike",
    *(
        ("for (name, layer, kind, _), value in zip(comps, values, strict=True):", after)
        for after in (
            "for (name, layer, kind, _), value in zip(comps, values, strict=None):",
            "for (name, layer, kind, _), value in zip(comps, values, ):",
            "for (name, layer, kind, _), value in zip(comps, values, strict=False):",
        )
    ),
)

_same(
    "attribution",
    "_label does not read its name argument (the label comes from the kind and the layer)",
    ('"label": _label(name, layer, kind),', '"label": _label(None, layer, kind),'),
)

_same(
    "attribution",
    "_depth is called only by _lines, where the bias line is the one line with layer None and every other line "
    "has a layer: `kind == 'bias'` and `layer is None` are the same test there, so either alone (or both) "
    "gives the same depths",
    ('if kind == "bias" or layer is None:', 'if kind == "bias" and layer is None:'),
    ('if kind == "bias" or layer is None:', 'if kind == "XXbiasXX" or layer is None:'),
    ('if kind == "bias" or layer is None:', 'if kind == "BIAS" or layer is None:'),
)

_same(
    "attribution",
    "h_last is (d,), its unsqueeze(0) is (1, d): unsqueeze(0) and unsqueeze(1) of that both give (1, 1, d)",
    (
        "x = h_last.to(decoder.device).unsqueeze(0).unsqueeze(0)  # (1, 1, d)",
        "x = h_last.to(decoder.device).unsqueeze(0).unsqueeze(1)  # (1, 1, d)",
    ),
)

_same(
    "attribution",
    "the embeddings line has layer -1, so the general formula gives it (-1 + 1.0) / n = 0.0 too: skipping the "
    "embed test changes no depth",
    ('if kind == "embed":', 'if kind == "XXembedXX":'),
    ('if kind == "embed":', 'if kind == "EMBED":'),
)

_same(
    "attribution",
    'float() parses "NAN" as "nan"',
    (
        "f\"{a.get('position')}): logit difference {a.get('logit_diff', float('nan')):+.3f} = the sum of \"",
        "f\"{a.get('position')}): logit difference {a.get('logit_diff', float('NAN')):+.3f} = the sum of \"",
    ),
    (
        "head += f\" (before soft-capping; {a.get('logit_diff_capped', float('nan')):+.3f} after)\"",
        "head += f\" (before soft-capping; {a.get('logit_diff_capped', float('NAN')):+.3f} after)\"",
    ),
)

_same(
    "attribution",
    "the frame is never empty (its first line is the embeddings), so len(df) is always true and the 0.0 "
    "fallback is never taken",
    (
        'total = float(df["cumulative"].iloc[-1]) if len(df) else 0.0',
        'total = float(df["cumulative"].iloc[-1]) if (len(df)) or True else 0.0',
    ),
    (
        'total = float(df["cumulative"].iloc[-1]) if len(df) else 0.0',
        'total = float(df["cumulative"].iloc[-1]) if len(df) else 1.0',
    ),
)
