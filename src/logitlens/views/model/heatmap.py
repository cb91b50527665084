"""The heatmap of one prompt: cells, colours, labels, hover and menu, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from logitlens.engine.result import LensResult
from logitlens.views.model.grid import Cell, MenuEntry, StatGrid, hover_records, menu_entries, stat_grid
from logitlens.views.model.summary import PromptSummary, prompt_summary, row_labels
from logitlens.views.model.text import check_prompt, column_labels, next_labels, prompt_label

__all__ = ["HeatmapModel", "heatmap_model"]


# ---- the heatmap of one prompt --------------------------------------------------------------------------
@dataclass(frozen=True)
class HeatmapModel:
    """Everything a heatmap of one prompt shows; lists are (C,) per column or (R, C) rows x columns."""

    prompt: int
    text: str  # the prompt (newlines as ↵), uncut
    model: str | None  # meta["model"]
    lens: str  # meta["lens"], "logit" by default
    grid: StatGrid
    row_names: list[str]  # (R,) embedding first
    depths: list[float]  # (R,) relative depth from the row specs
    columns: list[int]  # (C,) decoded column indices
    positions: list[int]  # (C,) input position of each column
    tokens: list[str]  # (C,) input token of each column
    column_labels: list[str]  # (C,) "token·position"
    cells: list[list[str]]  # (R, C) top-1 token of each cell, uncut
    next_tokens: list[str]  # (C,) the actual next token, "" after the last
    next_hits: list[bool]  # (C,) the final row's top-1 equals the next token
    summary: PromptSummary  # at the last column
    hover: list[list[Cell]] | None  # (R, C), None when not asked for
    menu: list[MenuEntry]
    row_labels: list[str] = field(default_factory=list)  # (R,) "embeddings", "12", "12 ◆" (critical)

    @property
    def lens_label(self) -> str:
        """The lens, for a title: "tuned lens"; "" for the logit lens (the default goes unsaid)."""
        return "" if self.lens == "logit" else f"{self.lens} lens"


def heatmap_model(
    result: LensResult, prompt: int = 0, stat: str = "top_probs", target: int | str = 0, *, hover: bool = True
) -> HeatmapModel:
    """The view model of one prompt's heatmap coloured by ``stat`` (see ``stat_grid``)."""
    prompt = check_prompt(result, prompt)
    grid = stat_grid(result, prompt, stat, target)
    cols = result.columns(prompt)
    pos = result.positions[prompt].tolist()
    nexts = next_labels(result, prompt)
    model = result.meta.get("model")
    summary = prompt_summary(result, prompt)
    return HeatmapModel(
        prompt=prompt,
        text=prompt_label(result, prompt, None),
        model=str(model) if model else None,
        lens=str(result.meta.get("lens", "logit")),
        grid=grid,
        row_names=list(result.row_names),
        depths=result.depths,
        columns=cols,
        positions=[pos[j] for j in cols],
        tokens=result.column_tokens(prompt),
        column_labels=column_labels(result, prompt),
        cells=result.top_tokens(prompt),
        next_tokens=[t for t, _ in nexts],
        next_hits=[h for _, h in nexts],
        summary=summary,
        hover=hover_records(result, prompt) if hover else None,
        menu=menu_entries(result),
        row_labels=row_labels(result, summary.critical_rows),
    )
