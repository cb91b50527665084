"""Remote execution: the whole lens inside one nnsight trace, run through a simulated NDIF server that
enforces the server's allow-list on the code that enters the trace, against the forward-hook backend.

``ndif_allow_list()`` makes ``remote="local"`` deserialize the request and run the shipped code (not the
caller's objects) with only NDIF's modules importable by it, and send the saved values back through
``torch.save``, as the server does. No test touches the network or needs an API key.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import textwrap
import time
import types

import pytest
import torch

from logitlens import LogitLens
from logitlens.core import kernels
from logitlens.errors import LogitLensError
from logitlens.model.ndif import (
    DESERIALIZATION_MODULES,
    NDIF_MODULES,
    import_guard,
    ndif_allow_list,
    request_groups,
    require_ndif,
)
from markers import needs_default_model
from tiny_models import VOCAB, build

nnsight = pytest.importorskip(
    "nnsight", reason="needs the remote extra: pip install 'logitlens[remote]' (make test installs it)"
)

from test_nnsight import PROMPT, assert_same, default_models, tiny_prompts, wrapped  # noqa: E402

FAMILIES = ["llama", "gpt2", "gemma2", "opt"]
TARGETS = [5, (6, 7, 200)]
FAKE_KEY = "ndif-test-key-0123456789abcdef"


def remote_run(lens, prompts, **kwargs):
    """lens.run(prompts, remote="local") under NDIF's allow-list; (result, the simulated servers)."""
    with ndif_allow_list() as servers:
        res = lens.run(prompts, remote="local", **kwargs)
    assert servers, "the simulated server did not run"
    for server in servers:  # nothing of logitlens, functools, dataclasses ... was imported on the server
        assert all(
            m in NDIF_MODULES
            or m.partition(".")[0] in DESERIALIZATION_MODULES
            or m.startswith(("torch.", "collections."))
            for m in server.imported
        ), server.imported
    return res, servers


@pytest.mark.parametrize("family", FAMILIES)
def test_remote_local_equals_hooks_under_the_allow_list(family, tokenizer):
    hooks = LogitLens(build(family), None)
    lens = LogitLens(wrapped(family, tokenizer))
    ids = tiny_prompts()
    ref = hooks.run(ids, top_k=4, targets=TARGETS)
    res, servers = remote_run(lens, ids, top_k=4, targets=TARGETS)
    assert len(servers) == 1  # several prompts go in one request
    assert_same(ref, res)
    run = lens.backend.last_run
    assert run.requests == 1 and run.self_check_diff <= 1e-4
    assert run.bytes_returned == servers[0].result_bytes  # measured the same way on both sides
    # only some positions, decoded on the server
    last, servers = remote_run(lens, ids, top_k=4, targets=TARGETS, positions=[-1])
    torch.testing.assert_close(
        last.top_probs[:, :, 0], ref.top_probs[torch.arange(3), :, [6, 3, 4]], atol=1e-4, rtol=0
    )
    assert servers[0].result_bytes < run.bytes_returned


def test_chunks_and_requests_do_not_change_the_result(tokenizer):
    """Rows decoded in groups under a tiny memory budget, prompts split over several requests."""
    hooks = LogitLens(build("llama"), None)
    ids = tiny_prompts(3)
    ref = hooks.run(ids, top_k=4, targets=TARGETS)
    nn_model = wrapped("llama", tokenizer)
    tight = LogitLens(nn_model, budget_bytes=2 * VOCAB * kernels.BYTES_PER_LOGIT)  # 2 vectors per chunk
    assert kernels.chunk_plan(len(tight.rows()), VOCAB, tight.budget_bytes) == (1, 2)
    res, _ = remote_run(tight, ids, top_k=4, targets=TARGETS)
    assert_same(ref, res)
    backend = tight.backend
    input_ids = torch.tensor([ids[0], ids[1][:4] + [0, 0, 0], ids[2] + [0, 0]])
    mask = (torch.arange(7) < torch.tensor([[7], [4], [5]])).long()
    gather = torch.arange(7).expand(3, 7)
    cells = [(b, j) for b, n in enumerate((7, 4, 5)) for j in range(n)]
    next_ids = torch.tensor([ids[b][j + 1] if j + 1 < len(ids[b]) else -1 for b, j in cells])
    with ndif_allow_list() as servers:
        st = backend.remote_stats(
            input_ids, mask, gather, tight.rows(), cells, next_ids, [[5]], 4, 2**20, None, "local",
            max_request_tokens=8,
        )  # fmt: skip
    assert len(servers) == backend.last_run.requests == 3  # 7 + 5 + 4 > 8 tokens: one prompt each
    flat = ref.top_ids[torch.tensor([b for b, _ in cells]), :, torch.tensor([j for _, j in cells])]
    assert torch.equal(st["top_ids"], flat) and st["top_ids"].dtype == torch.long


def test_request_groups():
    assert request_groups([3, 3, 3], 9) == [[0, 1, 2]]
    assert request_groups([5, 4, 2], 9) == [[0], [1, 2]]  # padded: 2 x 5 > 9, 2 x 4 <= 9
    assert request_groups([20, 1], 9) == [[0], [1]]  # longer than the bound: alone
    assert request_groups([], 9) == []


def test_a_transformers_model_runs_remote_through_nnsight(tiny_model_dir):
    """lens.run(remote="local") on a plain transformers model wraps it in nnsight for the trace."""
    lens = LogitLens.from_pretrained(str(tiny_model_dir))
    text = ["The Eiffel Tower is in the city of", "Hello world"]
    ref = lens.run(text, targets=[" Paris"])
    res, _ = remote_run(lens, text, targets=[" Paris"])
    assert lens.backend.name == "hooks" and res.meta["backend"] == "nnsight"
    assert_same(ref, res)


def test_a_model_without_weights_here_runs_remote(tiny_model_dir):
    """nnsight's meta model (nothing loaded here): checked and decoded on the (simulated) server."""
    ref = LogitLens.from_pretrained(str(tiny_model_dir)).run(PROMPT, targets=[" Paris"])
    lens = LogitLens.from_pretrained(str(tiny_model_dir), backend="nnsight", load_weights=False)
    assert not lens.backend.runs_here and lens.self_check_diff is None
    res, _ = remote_run(lens, PROMPT, targets=[" Paris"])
    assert_same(ref, res)
    assert lens.backend.last_run.self_check_diff <= 1e-4


def test_server_side_self_check_catches_a_wrong_table_entry(tokenizer):
    """A forgotten soft-cap (Gemma 2) is caught by the check computed inside the trace."""
    lens = LogitLens(wrapped("gemma2", tokenizer))
    lens.decoder.softcap = None  # what a table entry without the soft-cap would decode
    with pytest.raises(LogitLensError, match="server-side self-check failed for model_type 'gemma2'"):
        remote_run(lens, tiny_prompts())


# ---- the allow-list guard ------------------------------------------------------------------------------
def _imports_functools(h):
    import functools  # noqa: F401 - not on NDIF's allow-list

    return h


def _uses_json(h):
    json.dumps([1])  # a module global that the request ships: the server's unpickler must import json
    return h


def _uses_math(h):
    import math

    return h * math.sqrt(1.0)


@pytest.mark.parametrize(("helper", "module"), [(_imports_functools, "functools"), (_uses_json, "json")])
def test_the_guard_catches_a_helper_that_imports_a_forbidden_module(helper, module, tokenizer):
    lens = LogitLens(wrapped("llama", tokenizer))
    args = _stats_args(lens)
    with pytest.raises(ImportError, match=f"Module {module} is not whitelisted"), ndif_allow_list():
        lens.backend.remote_stats(*args, transform=helper, remote="local")
    with ndif_allow_list():  # an allowed module passes, and the transform runs inside the trace
        st = lens.backend.remote_stats(*args, transform=_uses_math, remote="local")
    assert st["top_ids"].shape == (9, lens.n_layers + 1, 4)


def test_the_guard_itself():
    forbidden = {"__builtins__": __builtins__}  # code rebuilt from source: no module name
    with import_guard() as seen:
        exec("import math, torch.nn.functional", forbidden)
        with pytest.raises(ImportError, match="Module functools is not whitelisted"):
            exec("import functools", forbidden)
        with pytest.raises(ImportError, match="Module json is not whitelisted"):
            exec("from json import dumps", {"__builtins__": __builtins__, "__name__": "logitlens.x"})
        json.dumps([1])  # a library's own work is its own: not checked
        exec("import dataclasses", {"__builtins__": __builtins__, "__name__": "transformers.x"})
    assert seen == ["math", "torch.nn.functional", "functools", "json"]
    exec("import functools", forbidden)  # the guard is gone


def test_kernels_stay_inside_the_allow_list():
    """The module shipped into traces imports only NDIF's modules, and each function names only torch,
    other kernels and plain values; no out= buffers, no host transfers, no in-place updates."""
    source = inspect.getsource(kernels)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                assert name == "__future__" or name.partition(".")[0] in NDIF_MODULES, name
    functions = [v for v in vars(kernels).values() if isinstance(v, types.FunctionType)]
    functions += [kernels.Reduction.__init__]
    assert {f.__name__ for f in functions} >= {"reduce_logits", "decode_reduce", "lens_stats", "unembed"}
    for fn in functions:
        for name in _global_names(fn.__code__) & set(fn.__globals__):
            value = fn.__globals__[name]
            shipped = getattr(value, "__module__", None) == kernels.__name__  # by value, with kernels
            module = isinstance(value, types.ModuleType) and value.__name__.partition(".")[0] in NDIF_MODULES
            assert shipped or module or isinstance(value, int | float | str), f"{fn.__name__} names {name!r}"
        fn_source = textwrap.dedent(inspect.getsource(fn))
        calls = [n for n in ast.walk(ast.parse(fn_source)) if isinstance(n, ast.Call)]
        attrs = {c.func.attr for c in calls if isinstance(c.func, ast.Attribute)}
        assert not {"cpu", "item", "tolist", "numpy"} & attrs, fn.__name__
        assert not [a for a in attrs if a.endswith("_") and not a.endswith("__")], fn.__name__
        assert not [k.arg for c in calls for k in c.keywords if k.arg == "out"], fn.__name__


def _global_names(code: types.CodeType) -> set[str]:
    """Names a code object (and the code nested in it) may look up as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _stats_args(lens):
    """remote_stats' positional arguments for three tiny prompts, all positions."""
    ids = tiny_prompts()
    n = [len(s) for s in ids]
    input_ids = torch.tensor([s + [0] * (7 - len(s)) for s in ids])
    mask = (torch.arange(7) < torch.tensor(n).unsqueeze(1)).long()
    gather = torch.tensor([[0, 1, 2]] * 3)
    cells = [(b, j) for b in range(3) for j in range(3)]
    next_ids = torch.tensor([ids[b][j + 1] for b, j in cells])
    return input_ids, mask, gather, lens.rows(), cells, next_ids, [[5]], 4, 2**20


# ---- the API key ---------------------------------------------------------------------------------------
@pytest.fixture
def no_key(monkeypatch):
    from nnsight.schema.config import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)


def test_remote_without_a_key_fails_at_once(no_key, tokenizer, capfd):
    lens = LogitLens(wrapped("llama", tokenizer))
    start = time.perf_counter()
    with pytest.raises(LogitLensError) as info:
        lens.run(tiny_prompts(), remote=True)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and "NDIF_API_KEY" in message and "nnsight login" in message


def test_remote_without_a_server_fails_fast_and_prints_no_key(no_key, tokenizer, monkeypatch, capfd):
    monkeypatch.setenv("NDIF_API_KEY", FAKE_KEY)
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:9")  # nothing listens there
    lens = LogitLens(wrapped("llama", tokenizer))
    start = time.perf_counter()
    with pytest.raises(LogitLensError) as info:
        lens.run(tiny_prompts(), remote=True)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message and "cannot reach NDIF at http://127.0.0.1:9" in message
    out, err = capfd.readouterr()
    assert FAKE_KEY not in message + out + err + repr(info.value.__cause__)
    with pytest.raises(LogitLensError, match="remote must be True"):
        lens.run(tiny_prompts(), remote="ndif")
    with pytest.raises(LogitLensError, match="cannot reach NDIF"):
        require_ndif("http://127.0.0.1:9", timeout=1.0)


# ---- the default model: the bytes that come back -------------------------------------------------------
@pytest.mark.slow
@needs_default_model
def test_default_model_remote_equals_hooks_and_returns_a_thousandth():
    hooks, lens = default_models()
    ref = hooks.run(PROMPT, top_k=10, targets=[" Paris"])
    res, servers = remote_run(lens, PROMPT, top_k=10, targets=[" Paris"])
    assert_same(ref, res)
    assert res.token(res.top_ids[0, -1, res.column_at(0, -1), 0]) == "␣Paris"
    run = lens.backend.last_run
    n_positions = sum(len(s) for s in res.input_ids)
    assert run.recipe_bytes == hooks.n_layers * n_positions * hooks.decoder.vocab_size * 4
    assert run.bytes_returned == servers[0].result_bytes
    assert run.bytes_returned * 1000 <= run.recipe_bytes, (run.bytes_returned, run.recipe_bytes)


def test_cli_remote_without_a_key_fails_at_once(no_key, capsys):
    from logitlens.cli import main

    start = time.perf_counter()
    code = main(["run", "The Eiffel Tower is in", "--remote", "--model", "meta-llama/Llama-3.1-70B"])
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "NDIF_API_KEY" in err


def test_cli_remote_local(tiny_model_dir, capsys):
    from logitlens.cli import main

    with ndif_allow_list() as servers:
        code = main(["run", "Hello world", "--model", str(tiny_model_dir), "--remote", "local"])
    assert code == 0 and len(servers) == 1


def test_a_bare_nnsight_model_runs_only_here():
    lens = LogitLens(nnsight.NNsight(copy.deepcopy(build("llama"))))
    with pytest.raises(LogitLensError, match="TransformersModel"):
        lens.run(tiny_prompts(), remote="local")
