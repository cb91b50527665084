"""What a new user hits in the first hour: --version, a fast --help, Ctrl-C, unknown models without a network,
outputs by suffix that are never half-written, and one line for each inconsistency found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logitlens import LensResult, LogitLensError
from logitlens.cli import main
from logitlens.core.files import write_atomic

EXE = str(Path(sys.executable).with_name("logitlens"))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ---- start-up -------------------------------------------------------------------------------------------
def test_version_module_and_fast_help_without_torch():
    from logitlens import __version__

    for cmd in ([EXE, "--version"], [sys.executable, "-m", "logitlens", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip().startswith("logitlens "), out
    start = time.perf_counter()
    out = subprocess.run([EXE, "run", "--help"], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert out.returncode == 0 and "--answer" in out.stdout
    # well under a second on a desktop; a loaded machine slows every start-up alike, so the bound scales
    # with this machine's own time to start the interpreter (importing torch alone takes far longer)
    assert seconds < max(3.0, 15 * _entry_reached_s()), seconds
    probe = "import sys, logitlens.cli, logitlens; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out
    assert __version__


def test_checks_before_loading_import_no_torch(tmp_path):
    """What the CLI checks before it loads a model runs without torch: a SIGINT that lands in torch's C++
    start-up outside ``_sigint_deferred`` aborts the process (SIGABRT) instead of exiting 130."""
    probe = (
        "import sys, argparse; from logitlens.cli.run import check_stream_args; "
        f"check_stream_args(argparse.Namespace(out={str(tmp_path / 'r.parquet')!r}, resume=True)); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out


def _entry_reached_s() -> float:
    """How long this machine's interpreter takes to start and import ``logitlens._entry`` (the best of 3)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import logitlens._entry"], check=True, timeout=60)
        times.append(time.perf_counter() - start)
    return min(times)


# "early": while the command imports logitlens.cli (argparse, rich, ...); then loading torch, the model, running
@pytest.mark.parametrize("delay", ["early", 1.0, 2.5, 4.5])
def test_ctrl_c_exits_130_with_one_line(tiny_model_dir, tmp_path, delay):
    """SIGINT at several moments: exit 130 and the one line "logitlens: interrupted", nothing written.

    The earliest moment our code can handle is once the console script has imported ``logitlens._entry``
    (the package ``__init__`` and that module import almost nothing: ~20 ms after the process starts here).
    A SIGINT before that lands in the interpreter's own start-up (``site``, the standard library), which no
    Python code can catch (on a loaded machine that start-up takes longer); so "early" waits 0.05 s, or twice this machine's measured time to reach
    ``_entry`` if that is longer, and lands while ``logitlens.cli`` and its imports load.
    """
    if delay == "early":
        delay = max(0.05, 2 * _entry_reached_s())
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt number {i} is here" for i in range(4000)), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            EXE,
            "run",
            "--prompts-file",
            str(prompts),
            "--model",
            str(tiny_model_dir),
            "--json",
            str(tmp_path / "r.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and one_line(err) == "logitlens: interrupted"
    assert not (tmp_path / "r.json").exists()


_SWALLOWED = """
import sys, time, weakref
from logitlens._entry import reraise_swallowed_interrupts
if sys.argv[1] == "guarded":
    reraise_swallowed_interrupts()
class Held:
    pass
held = Held()
def callback(_):
    raise KeyboardInterrupt  # as a Ctrl-C landing in importlib's module-lock callback does
ref = weakref.ref(held, callback)
del held
try:
    time.sleep(20)
    print("ran to the end")
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("mode", ["guarded", "bare"])
def test_a_ctrl_c_swallowed_by_an_ignored_callback_still_interrupts(mode):
    """A KeyboardInterrupt raised in a callback whose errors Python ignores (the "Exception ignored in:
    _get_module_lock.<locals>.cb" of an import) is raised again in the main thread, with no traceback;
    without the guard the program would run on to its end."""
    # bare: the failure the guard exists for, shown once (kept short: no 20 s sleep)
    code = _SWALLOWED.replace("time.sleep(20)", "time.sleep(0.3)") if mode == "bare" else _SWALLOWED
    out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60)
    if mode == "guarded":
        assert out.stdout.strip() == "interrupted" and out.stderr == "", out
    else:
        assert out.stdout.strip() == "ran to the end" and "Exception ignored" in out.stderr, out


def test_a_ctrl_c_during_torch_import_is_held_until_the_import_ends():
    """A KeyboardInterrupt raised inside torch's C++ start-up aborts the process (SIGABRT, pybind11), so the
    CLI holds a Ctrl-C while it imports torch and transformers and raises it just after."""
    from logitlens.cli.common import sigint_deferred

    reached = []
    with pytest.raises(KeyboardInterrupt), sigint_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here: it must not raise inside the block
        reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# ---- models ---------------------------------------------------------------------------------------------
def test_unknown_model_with_the_network_unreachable_answers_fast(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        NO_PROXY="",
        no_proxy="",
        HF_HUB_ETAG_TIMEOUT="2",
        HF_HUB_DOWNLOAD_TIMEOUT="2",
        HF_HOME=str(tmp_path / "hf"),  # an empty cache: the name cannot be found locally
    )
    start = time.perf_counter()
    out = subprocess.run(
        [EXE, "run", "hi", "--model", "nobody-xyz/no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert time.perf_counter() - start < 10
    assert out.returncode == 2
    assert one_line(out.stderr).startswith("logitlens: error: cannot reach the Hugging Face hub")


def test_offline_and_local_folder_messages(tmp_path, tiny_model_dir, monkeypatch):
    from logitlens.model.sources import check_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(LogitLensError, match="not in the Hugging Face cache, and HF_HUB_OFFLINE is set"):
        check_source("nobody-xyz/no-such-model")
    with pytest.raises(LogitLensError, match="there is no folder './missing'"):
        check_source("./missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LogitLensError, match="is not a model: it has no config.json"):
        check_source(str(empty))
    (empty / "config.json").write_text("{}")
    with pytest.raises(LogitLensError, match="has config.json but no weights"):
        check_source(str(empty))
    check_source(str(tiny_model_dir))  # a real model folder passes
    from logitlens import LogitLens

    assert LogitLens.from_pretrained(tiny_model_dir).n_layers == 3  # a pathlib.Path works too


# ---- outputs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "name", "message"),
    [
        ("--json", "missing/r.json", "the folder {d}/missing does not exist"),
        ("--json", ".", "is a directory"),
        ("--json", "r.txt", "must end in .json, .parquet"),
        ("--png", "noext", "must end in .png, .svg, .pdf, .jpg, .jpeg"),
        ("--html", "missing/r.html", "does not exist"),
    ],
)
def test_unwritable_outputs_fail_before_the_model_loads(capsys, tmp_path, option, name, message):
    target = str(tmp_path / name) if name != "." else str(tmp_path)
    code, _, err = run_cli(capsys, "run", "hi", "--model", "./no-model-needed", option, target)
    assert code == 2 and message.format(d=tmp_path) in one_line(err)


def test_every_image_suffix_and_wrote_each_file(capsys, tiny_model_dir, tmp_path):
    files = [tmp_path / f"lens.{s}" for s in ("png", "svg", "pdf", "jpg")]
    for f in files:
        code, _, err = run_cli(
            capsys, "run", "Hello world", "--model", str(tiny_model_dir), "--png", str(f), "--quiet"
        )
        assert code == 0 and err.strip() == f"wrote {f}", err
    heads = [f.read_bytes()[:8] for f in files]
    assert heads[0].startswith(b"\x89PNG") and b"<?xml" in heads[1] + files[1].read_bytes()[:100]
    assert heads[2].startswith(b"%PDF") and heads[3].startswith(b"\xff\xd8")
    out = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys,
        "run",
        "Hi",
        "--model",
        str(tiny_model_dir),
        "--json",
        str(out),
        "--html",
        str(tmp_path / "r.html"),
        "--quiet",
    )
    assert err.strip().splitlines() == [f"wrote {out}", f"wrote {tmp_path / 'r.html'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*(f.name for f in files), "r.json", "r.html"]
    )


def test_nothing_half_written(tmp_path):
    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(LogitLensError, match="cannot write the result to .*: No space left on device"):
        write_atomic(tmp_path / "r.json", broken, "the result")

    def interrupted(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "r.json", interrupted, "the result")
    assert list(tmp_path.iterdir()) == []


# ---- one line each --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "Hi", "--positions", "abc"], "argument --positions: give comma-separated integers"),
        (["run", "Hi", "--positions=-1,-1"], "position -1 is given twice; give each position once"),
    ],
)
def test_consistency_messages(capsys, tiny_model_dir, argv, message):
    code, _, err = run_cli(capsys, *argv, "--model", str(tiny_model_dir))
    line = one_line(err)
    assert code == 2 and message in line and line.count("--positions") <= 1


def test_terminal_grid_window(capsys, tiny_model_dir, monkeypatch):
    """--window N / --window-start K pick exactly the grid's positions; a bad value: one line, exit 2."""
    from logitlens.views import terminal

    shown: list[list[str]] = []
    real = terminal.grid_table

    def spy(*args, **kwargs):
        table = real(*args, **kwargs)
        shown.append([str(c.header) for c in table.columns[1:]])
        return table

    monkeypatch.setattr(terminal, "grid_table", spy)
    model = ["--model", str(tiny_model_dir)]
    prompt = "one two three four five six seven"
    code, out, _ = run_cli(capsys, "run", prompt, *model, "--window", "3", "--window-start", "1")
    assert code == 0 and "positions 1-3 of" in out
    from logitlens import LogitLens

    tokens = LogitLens.from_pretrained(str(tiny_model_dir)).run(prompt, top_k=1).tokens[0]
    from logitlens.views.model import clip

    assert shown[-1] == [clip(t, 9) for t in tokens[1:4]]
    code, out, _ = run_cli(capsys, "run", prompt, *model, "--window", "2")
    assert code == 0 and shown[-1] == [clip(t, 9) for t in tokens[-2:]]
    code, out, _ = run_cli(capsys, "run", prompt, *model, "--window-start=-1")
    assert code == 0 and shown[-1] == [clip(tokens[-1], 9)]
    for bad, message in [
        (["--window", "0"], "--window must be at least 1"),
        (["--window", "x"], "argument --window: invalid int value"),
        (["--window-start", "99"], "--window-start 99 is outside the prompt's"),
    ]:
        code, out, err = run_cli(capsys, "run", prompt, *model, *bad)
        assert code == 2 and message in one_line(err) and out == "", (bad, err)


def test_quiet_without_outputs_is_refused_before_loading(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", "Hi", "--quiet", "--model", str(tmp_path / "no-such-model"))
    assert code == 2 and out == ""
    assert one_line(err) == (
        "logitlens: error: --quiet with no output file would show and write nothing: give --json, --html, "
        "--png, --trajectory or --out, or drop --quiet"
    )


def test_short_dtypes_whitespace_target_and_load_of_a_non_result(capsys, tiny_model_dir, tmp_path):
    code, out, err = run_cli(
        capsys, "run", "Hi", "--model", str(tiny_model_dir), "--dtype", "bf16", "--target", " "
    )
    assert code == 0 and "target ' ' is only whitespace" in one_line(err)
    bad = tmp_path / "x.json"
    bad.write_bytes(b"\x89PNG not json")
    with pytest.raises(LogitLensError, match="it is not JSON"):
        LensResult.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(LogitLensError, match="not a logitlens result"):
        LensResult.load(bad)


# ---- compare takes what run takes -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def second_model_dir(tokenizer, tmp_path_factory):
    from conftest import make_llama

    path = tmp_path_factory.mktemp("tiny-llama-b")
    make_llama(len(tokenizer), seed=2, num_hidden_layers=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_compare_prompts_file_json_png_html(capsys, tiny_model_dir, second_model_dir, tmp_path):
    prompts = tmp_path / "p.tsv"
    prompts.write_text("Hello world\t hello\nThe city of\t Paris\n", encoding="utf-8")
    out = tmp_path / "cmp.json"
    argv = ["compare", "Hi there", "--prompts-file", str(prompts), "--model", str(tiny_model_dir)]
    argv += ["--model", str(second_model_dir), "--json", str(out), "--png", str(tmp_path / "cmp.svg")]
    argv += ["--html", str(tmp_path / "cmp.html"), "--batch-size", "2"]
    code, text, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "prompt 3" in text and text.count("stays top-1 from") >= 6  # every prompt of every model
    wrote = [line.removeprefix("wrote ") for line in err.strip().splitlines()]
    assert len(wrote) == 4 and all(Path(p).is_file() for p in wrote)
    results = [LensResult.load(p) for p in wrote[:2]]
    assert [r.n_prompts for r in results] == [3, 3] and [r.n_layers for r in results] == [3, 2]
    assert results[0].answers == [None, " hello", " Paris"]
    assert Path(wrote[0]).name.startswith("cmp-") and wrote[0] != wrote[1]
    svg = (tmp_path / "cmp.svg").read_text()
    assert svg.count("after block (◆ critical layer)") == 2  # two heatmaps side by side
    page = (tmp_path / "cmp.html").read_text()
    assert page.count('class="summary"') == 3  # one section per prompt


def test_progress_bar_on_a_terminal_and_the_same_result(capsys, tiny_model_dir, tmp_path, monkeypatch):
    from logitlens.cli import run as run_command

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt {i} here" for i in range(12)), encoding="utf-8")
    argv = ["run", "--prompts-file", str(prompts), "--model", str(tiny_model_dir), "--batch-size", "2"]
    assert main([*argv, "--json", str(tmp_path / "plain.json"), "--quiet"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(run_command, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*argv, "--json", str(tmp_path / "bar.json"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "prompts" in err and "tokens/s" in err
    plain, bar = LensResult.load(tmp_path / "plain.json"), LensResult.load(tmp_path / "bar.json")
    assert bar.prompts == plain.prompts and bar.top_ids.equal(plain.top_ids)


def test_compare_takes_the_terminal_window(capsys, tiny_model_dir, second_model_dir):
    models = ["--model", str(tiny_model_dir), "--model", str(second_model_dir)]
    prompt = "one two three four five six seven"
    code, out, _ = run_cli(capsys, "compare", prompt, *models, "--window", "2", "--window-start", "0")
    assert code == 0 and out.count("positions 0-1 of") == 2  # one grid per model
    code, out, err = run_cli(capsys, "compare", prompt, *models, "--window-start", "99")
    assert code == 2 and "--window-start 99 is outside" in one_line(err) and out == ""
