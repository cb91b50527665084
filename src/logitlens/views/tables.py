"""Rich tables the commands print: per-row evaluation tables, models lined up on relative depth, the
streamed run's aggregate, a tuned lens's summary. Plain data in, a ``rich.table.Table`` out; no model runs.
"""

from __future__ import annotations

import math

__all__ = [
    "aggregate_table",
    "compare_depth_table",
    "eval_depth_table",
    "eval_table",
    "fmt",
    "lens_summary_table",
]


def fmt(value: float, se: float | None = None, digits: int = 3) -> str:
    """``value ±se`` (the error dimmed) as rich markup; "-" for NaN."""
    if value is None or math.isnan(value):
        return "-"
    if se is None or math.isnan(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [dim]±{se:.{digits}f}[/dim]"


def eval_table(df):
    """A rich table of one model's ``evaluate`` frame, a line per row; fits 80 columns (errors are shown
    for bits/token and accuracy; every one is in ``--csv`` / ``--json``)."""
    from rich.markup import escape
    from rich.table import Table

    a = df.attrs
    title = (
        f"{df['model'].iloc[0]} · {a.get('lens')} lens · {a.get('data')} [{a.get('split')}] · "
        f"{a.get('tokens', 0):,} tokens ({a.get('sequences')} x {a.get('seq_len')}) · "
        f"{a.get('tokens_per_s', float('nan')):,.0f} tokens/s"
    )
    table = Table(
        title=escape(title),
        caption="mean over every position with a next token, ± standard error; KL, entropy in nats",
    )
    heads = ("row", "depth", "bits/token", "KL", "entropy", "= final", "= next token")
    for col in heads:
        table.add_column(col, justify="left" if col == "row" else "right", no_wrap=True)
    for _, r in df.iterrows():
        table.add_row(
            escape(str(r["row_name"])),
            f"{r['depth']:.2f}",
            fmt(r["bits_per_token"], r["bits_per_token_se"]),
            fmt(r["kl_to_final"]),
            fmt(r["entropy"]),
            fmt(r["agreement"]),
            fmt(r["accuracy"], r["accuracy_se"]),
        )
    return table


def eval_depth_table(frames, points: int = 11):
    """Several models side by side on relative depth 0, 0.1, ..., 1: each model's nearest row."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title="lined up on relative depth (0 = embeddings, 1 = last block)",
        caption="each model's nearest row: bits/token · top-1 = next token",
    )
    table.add_column("depth", justify="right")
    several = len({str(df["lens"].iloc[0]) for df in frames if "lens" in df.columns}) > 1
    for df in frames:
        head = str(df["model"].iloc[0]) + (f" ({df['lens'].iloc[0]} lens)" if several else "")
        table.add_column(escape(head), justify="right")
    for i in range(points):
        d = i / (points - 1)
        cells = [f"{d:.1f}"]
        for df in frames:
            r = df.iloc[int((df["depth"] - d).abs().to_numpy().argmin())]
            cells.append(f"{escape(str(r['row_name']))}: {r['bits_per_token']:.2f} · {r['accuracy']:.3f}")
        table.add_row(*cells)
    return table


def aggregate_table(df, model: str = ""):
    """A rich table of ``stream``'s per-row aggregate (means; the standard errors are in the DataFrame)."""
    from rich.markup import escape
    from rich.table import Table

    targets = [c for c in df.columns if c.startswith("p(") and not c.endswith("_se")]
    title = f"{model} · per row, mean over {int(df['cells'].iloc[0]):,} cells".strip(" ·")
    table = Table(
        title=escape(title),
        caption="entropy, KL in nats; top1=final: top-1 is the final row's; bits/tok and top1=next: "
        "against the actual next token, where there is one",
    )
    for col in ("row", "entropy", "KL", "top1=final", "bits/tok", "top1=next", *targets):
        table.add_column(escape(col), justify="left" if col == "row" else "right", no_wrap=True)
    for _, r in df.iterrows():
        table.add_row(
            escape(str(r["row_name"])),
            fmt(r["entropy"]),
            fmt(r["kl_to_final"]),
            fmt(r["agreement"]),
            fmt(r["bits_per_token"]),
            fmt(r["accuracy"]),
            *[fmt(r[c], digits=4) for c in targets],
        )
    return table


def compare_depth_table(names, results, prompt: int = 0):
    """Where each model settles on its answer, on a shared relative-depth scale 0..1 (from the row specs)."""
    from rich.table import Table

    from logitlens.views.model import prompt_summary

    table = Table(title="final top-1 and where it settles (relative depth 0 = embeddings, 1 = output)")
    for col in ("model", "rows", "final top-1", "p", "stays top-1 from", "relative depth"):
        table.add_column(col)
    for name, res in zip(names, results, strict=True):
        s = prompt_summary(res, prompt)
        table.add_row(
            name,
            str(res.n_rows),
            s.final_top1,
            f"{s.final_prob:.3f}",
            s.first_stable_label,
            f"{s.first_stable_depth:.2f}",
        )
    return table


def lens_summary_table(tuned):
    """A rich table of a trained lens's facts: the run, and the held-out KL per row when there is one."""
    from rich.markup import escape
    from rich.table import Table

    f = tuned.meta.get("training", {})
    rate = f.get("tokens_per_s")
    title = (
        f"tuned lens for {tuned.meta.get('base_model_name_or_path')} · {f.get('steps')} steps x "
        f"{f.get('batch_tokens'):,} tokens ({f.get('data')}, seq_len {f.get('seq_len')}) · final loss "
        f"{f.get('final_loss', float('nan')):.4f} nats · {f.get('seconds', 0):,.0f} s"
        + (f" · {rate:,.0f} tokens/s" if rate else "")
    )
    held = f.get("held_out")
    table = Table(
        title=escape(title),
        caption=escape(
            f"held-out KL to the final row, nats: {held['tokens']:,} tokens of {held['data']}"
            if held
            else "no held-out evaluation (--eval-tokens 0, or no validation split)"
        ),
    )
    if not held:
        return table
    for col in ("row", "logit lens", "tuned lens", "change"):
        table.add_column(col, justify="left" if col == "row" else "right", no_wrap=True)
    for name, a, b in zip(held["rows"], held["kl_logit"], held["kl_tuned"], strict=True):
        table.add_row(escape(str(name)), f"{a:.4f}", f"{b:.4f}", f"{(b - a) / a:+.0%}" if a > 0 else "-")
    return table
