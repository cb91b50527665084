"""Guards for direct logit attribution (issue 20): the output row's target rank, against the model's own
logits ranked here and against ``run``'s target_ranks."""

from __future__ import annotations

import pytest
import torch

from logitlens import LogitLens
from tiny_models import build

IDS = [5, 17, 33, 80, 9, 101, 44]


@pytest.fixture(scope="module")
def tiny():
    return LogitLens(build("llama"), None, name="llama")


@pytest.mark.parametrize("position", [-1, 2])
def test_output_row_target_rank_is_one_for_the_top_token(tiny, position):
    with torch.no_grad():
        logits = tiny.model(torch.tensor([IDS])).logits[0, position].float()  # (V,)
    order = torch.argsort(logits, descending=True).tolist()
    for want_rank in (1, 2, 7):
        target = order[want_rank - 1]
        df = tiny.attribute(IDS, target, position=position)
        assert df.attrs["top1_id"] == order[0]
        assert df.attrs["target_rank"] == want_rank, (target, want_rank)
        res = tiny.run([IDS], targets=[target], positions=[position])
        assert int(res.target_ranks[0, -1, 0, 0]) == want_rank  # the same rank as the run's output row
