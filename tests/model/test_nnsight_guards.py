"""Guards for the nnsight backend (issue 20): a NaN difference in the server-side self-check is a failure,
not a pass (``diff > tol`` is False for NaN)."""

from __future__ import annotations

import copy

import pytest
import torch

from logitlens import LogitLens, LogitLensError
from tiny_models import VOCAB, build

nnsight = pytest.importorskip(
    "nnsight", reason="needs the remote extra: pip install 'logitlens[remote]' (make test installs it)"
)


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (6, 4)]


@pytest.fixture()
def nn_lens(tokenizer):
    return LogitLens(nnsight.TransformersModel(copy.deepcopy(build("llama")), tokenizer=tokenizer))


def test_a_nan_server_check_is_refused(nn_lens):
    nn_lens.run(_prompts(), remote="local")  # the check passes as it should
    assert nn_lens.backend.last_run.self_check_diff <= 1e-4
    nn_lens.decoder.softcap = float("nan")  # every decoded logit NaN: the difference is NaN
    with pytest.raises(LogitLensError, match=r"server-side self-check failed .* by nan"):
        nn_lens.run(_prompts(), remote="local")
