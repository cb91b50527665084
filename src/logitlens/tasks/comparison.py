"""Compare models (or checkpoints) on one prompt: run each LogitLens, then draw the results side by side.

The lens side of the comparison: this module runs models; ``views.plotly.compare_figure`` and
``views.report.write_compare_html`` only draw results.

Example:
    >>> fig = logitlens.compare([lens_a, lens_b], "The Eiffel Tower is in the city of", targets=[" Paris"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from logitlens.engine.result import LensResult
from logitlens.errors import LogitLensError

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["compare", "run_models"]


def run_models(
    models: Sequence[Any],
    prompt: str | int = 0,
    *,
    targets=None,
    top_k: int = 10,
    batch_size: int | None = None,
) -> list[LensResult]:
    """One LensResult per entry of ``models``: LogitLens objects are run on ``prompt`` (a string), with
    ``targets``, ``top_k`` and ``batch_size`` (None: each lens's own); LensResults are kept as they are."""
    results = []
    for i, m in enumerate(models):
        if isinstance(m, LensResult):
            results.append(m)
        elif hasattr(m, "run"):
            if not isinstance(prompt, str):
                raise LogitLensError("to run models, give the prompt as a string")
            kwargs: dict[str, Any] = {"targets": targets, "top_k": top_k}
            if batch_size is not None:
                kwargs["batch_size"] = batch_size
            results.append(m.run(prompt, **kwargs))
        else:
            raise LogitLensError(
                f"models[{i}] is a {type(m).__name__}: give LogitLens objects or LensResults"
            )
    return results


def compare(
    models: Sequence[Any],
    prompt: str | int = 0,
    *,
    names: Sequence[str] | None = None,
    targets=None,
    top_k: int = 10,
    stat: str = "top_probs",
    target: int | str = 0,
    position: int = -1,
    batch_size: int | None = None,
) -> go.Figure:
    """Compare models on one prompt: ``views.plotly.compare_figure`` over LogitLens objects and/or results.

    The heatmaps stand side by side, and the target's curve of every model shares one axis of relative
    depth (0 = embeddings, 1 = output), so models of different depth line up.

    Args:
        models: LogitLens objects (each is run on ``prompt``, which must then be a string, with
            ``targets``, ``top_k`` and ``batch_size``) or LensResults.
        prompt: the prompt text, or with results an index or a string found in each result's prompts.
        names: one label per model (default: the models' names).
        targets: tokens to track, as ``LogitLens.run``.
        top_k: tokens kept per cell.
        stat: the heatmaps' statistic (any drawable one; see ``views.model.stat_grid``).
        target: the target whose curve is drawn (index or name).
        position: the position of the curves (negative counts from the end).
        batch_size: prompts per forward pass.

    Returns:
        A Plotly ``Figure`` (in a notebook, display it with ``logitlens.views.report.figure_div`` to stay
        offline).

    Example:
        >>> fig = logitlens.compare([lens_a, lens_b], "The Eiffel Tower is in the city of", targets=[" Paris"])
    """
    from logitlens.views.plotly import compare_figure

    results = run_models(models, prompt, targets=targets, top_k=top_k, batch_size=batch_size)
    if names is None:
        names = [
            getattr(m, "name", None) or r.meta.get("model") or f"model {i}"
            for i, (m, r) in enumerate(zip(models, results, strict=True))
        ]
        lenses = [str(r.meta.get("lens", "logit")) for r in results]
        if len(set(lenses)) > 1:  # one model through two lenses: "M (logit)", "M (tuned)"
            names = [f"{n} ({lens})" for n, lens in zip(names, lenses, strict=True)]
    index = [prompt if isinstance(prompt, int) else _find_prompt(r, prompt) for r in results]
    return compare_figure(results, names, index, stat=stat, target=target, position=position)


def _find_prompt(result: LensResult, prompt: str) -> int:
    if prompt in result.prompts:
        return result.prompts.index(prompt)
    raise LogitLensError(f"prompt {prompt!r} is not in this result; its prompts are {result.prompts}")
