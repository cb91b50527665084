"""The web API (logitlens.web) with FastAPI's test client over the tiny random Llama of conftest.

Each test says which promise of the serve issue it guards: the LensResult schema, one-line 4xx details,
20 concurrent requests each getting exactly their own result, 503 + Retry-After on a full queue, a client
that leaves taking its job out of the queue, the Host / origin / token guard, uploads, views, downloads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from logitlens import LensResult  # noqa: E402
from logitlens.web import ServeConfig, create_app, prepare  # noqa: E402
from logitlens.web.schemas import LensResultJSON  # noqa: E402

BASE = "http://127.0.0.1:8000"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.fixture(scope="module")
def app(lens):
    return create_app([lens], config=ServeConfig(queue_size=32, max_prompt_tokens=40))


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE) as c:
        yield c


def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _detail(r) -> str:
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and detail, detail
    return detail


def test_run_returns_the_result_schema_and_equals_a_direct_run(client, lens):
    """/api/run answers LensResult.to_dict(): LensResult.from_dict reads it, and it is lens.run's result."""
    body = {"prompts": "Hello world, hello", "top_k": 5, "targets": [" world"], "answers": [" lens"]}
    r = client.post("/api/run", json=body)
    assert r.status_code == 200, r.text
    LensResultJSON.model_validate(r.json())
    got = LensResult.from_dict(r.json())
    want = lens.run("Hello world, hello", top_k=5, targets=[" world"], answers=[" lens"])
    assert got.top_ids.equal(want.top_ids) and got.target_ranks.equal(want.target_ranks)
    assert got.prompts == ["Hello world, hello"] and got.answers == [" lens"]
    assert r.headers["x-result-id"]
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}  # no CORS


def test_repeated_requests_come_from_the_cache(client, app, monkeypatch):
    """An identical request is answered from the cache: the model's worker gets no second job."""
    body = {"prompts": ["one two three"], "top_k": 3}
    first = client.post("/api/run", json=body)
    worker = next(iter(app.state.logitlens.models.values())).worker
    calls = []
    monkeypatch.setattr(worker, "submit", lambda fn: calls.append(fn))
    second = client.post("/api/run", json=body)
    assert second.status_code == 200 and calls == []
    assert second.headers["x-result-id"] == first.headers["x-result-id"] and second.content == first.content


BAD = [
    ("malformed JSON", b'{"prompts": ["a"', 400, "malformed JSON"),
    ("missing prompts", {"top_k": 3}, 422, "prompts: is required"),
    ("empty prompt", {"prompts": ["  "]}, 422, "prompt 1 is empty"),
    ("no prompts", {"prompts": []}, 422, "at least one prompt"),
    ("top_k 0", {"prompts": "a", "top_k": 0}, 422, "top_k"),
    ("top_k 1000", {"prompts": "a", "top_k": 1000}, 422, "top_k"),
    ("unknown field", {"prompts": "a", "topk": 3}, 422, "topk: is not a field"),
    ("wrong type", {"prompts": "a", "subblocks": "maybe"}, 422, "subblocks"),
    ("unknown model", {"prompts": "a", "model": "gpt-17"}, 404, "unknown model 'gpt-17'; loaded: tiny-llama"),
    ("unknown lens", {"prompts": "a", "lens": "tuned"}, 404, "unknown lens 'tuned'"),
    ("too many tokens", {"prompts": " ".join(WORDS * 5)}, 400, "this server takes at most 40"),
    ("too many prompts", {"prompts": ["a"] * 17}, 422, "at most 16"),
    ("answers count", {"prompts": ["a", "b"], "answers": [" x"]}, 400, "got 1 answers for 2 prompts"),
    ("empty target", {"prompts": "a", "targets": [""]}, 422, "a target is empty"),
    ("bad position", {"prompts": "one two", "positions": [99]}, 400, "position 99 is out of range"),
]


@pytest.mark.parametrize(("what", "body", "status", "text"), BAD, ids=[b[0] for b in BAD])
def test_bad_run_requests_get_one_line(client, what, body, status, text):
    """Every bad input of the issue: its status and a one-line detail saying what is wrong."""
    if isinstance(body, bytes):
        r = client.post("/api/run", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/api/run", json=body)
    assert r.status_code == status, r.text
    assert text in _detail(r)


def test_oversized_bodies_get_413(lens):
    """A body over the limit is refused with 413, by Content-Length and while it streams in (chunked)."""
    app = create_app([lens], config=ServeConfig(max_body_bytes=1000, max_upload_bytes=2000))
    with TestClient(app, base_url=BASE) as c:
        r = c.post("/api/run", json={"prompts": "x" * 5000})
        assert r.status_code == 413 and "too large" in _detail(r)

        def chunks():
            yield b'{"prompts": "'
            for _ in range(20):
                yield b"x" * 100
            yield b'"}'

        r = c.post("/api/run", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        r = c.post("/api/open", files={"file": ("r.json", b"x" * 3000)})
        assert r.status_code == 413


def test_twenty_concurrent_requests_each_get_their_own_result(client, lens):
    """20 different prompts at once (in one model's queue): each answer holds exactly its own prompt's result."""
    prompts = [f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} {'hello ' * (i % 4)}world {i}" for i in range(20)]
    out: dict[int, dict] = {}

    def post(i: int) -> None:
        out[i] = client.post("/api/run", json={"prompts": [prompts[i]], "top_k": 4}).json()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = lens.run(prompts, top_k=4)
    for i in range(20):
        got = LensResult.from_dict(out[i])
        assert got.prompts == [prompts[i]]
        mine = want.select(i)
        cols = mine.columns(0)
        assert got.top_ids[0, :, cols].equal(mine.top_ids[0, :, cols]), i


def test_a_full_queue_answers_503_with_retry_after(lens):
    """With the worker busy and its queue full, a new request is refused at once: 503 and Retry-After."""
    app = create_app([lens], config=ServeConfig(queue_size=1))
    worker = next(iter(app.state.logitlens.models.values())).worker
    gate = threading.Event()
    running = worker.submit(gate.wait)  # the worker is busy
    _until(lambda: worker.busy)
    waiting = worker.submit(lambda: None)  # the queue (1 place) is full
    try:
        with TestClient(app, base_url=BASE) as c:
            r = c.post("/api/run", json={"prompts": "hello"})
            assert r.status_code == 503
            assert int(r.headers["retry-after"]) >= 1
            assert "busy" in _detail(r)
    finally:
        gate.set()
        running.future.result(5)
        assert waiting.future.done()  # ran, or cancelled when the app shut down


def test_a_client_that_leaves_does_not_leave_work_queued(lens):
    """A request whose client disconnects while it waits is taken out of the queue and never runs."""
    app = create_app([lens], config=ServeConfig(queue_size=4))
    worker = next(iter(app.state.logitlens.models.values())).worker
    gate = threading.Event()
    busy = worker.submit(gate.wait)
    _until(lambda: worker.busy)
    ran = []
    original = worker.submit

    def spy(fn):
        ran.append("queued")
        return original(lambda: ran.append("ran") or fn())

    worker.submit = spy  # type: ignore[method-assign]
    body = json.dumps({"prompts": "hello"}).encode()

    async def go() -> list[dict]:
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        start = time.monotonic()

        async def receive() -> dict:  # the body, then the client hangs up after 0.3 s
            if messages:
                return messages.pop(0)
            left = 0.3 - (time.monotonic() - start)
            if left > 0:
                await asyncio.sleep(left)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/api/run", "raw_path": b"/api/run", "query_string": b"",
            "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
        }  # fmt: skip
        await app(scope, receive, send)
        return sent

    try:
        sent = asyncio.run(go())
        assert ran == ["queued"] and worker.pending == 0  # queued once, then removed, never run
        assert sent[0]["status"] == 499
    finally:
        gate.set()
        busy.future.result(5)
    assert "ran" not in ran


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("evil.example:8000", 403),
     ("127.0.0.1.nip.io", 403), ("", 403)],
)  # fmt: skip
def test_the_host_header_must_name_this_server(client, host, status):
    """DNS rebinding: a Host that is not the bound address (or a loopback alias) is refused."""
    r = client.get("/api/health", headers={"host": host})
    assert r.status_code == status
    if status == 403:
        assert "DNS rebinding" in _detail(r)


def test_cross_origin_requests_are_refused_and_no_cors(client):
    """No CORS: another origin's request is refused, and no Access-Control header is ever sent."""
    r = client.post("/api/run", json={"prompts": "a"}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in _detail(r)
    r = client.get("/api/health", headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = client.options("/api/run", headers={"access-control-request-method": "POST"})
    assert not any(k.lower().startswith("access-control") for k in r.headers)
    assert client.get("/api/health", headers={"origin": BASE}).status_code == 200


def test_a_token_is_required_beyond_loopback(lens):
    """Bound to a non-loopback address: a token is generated, a warning printed, and every request needs it
    (query, bearer header, or the cookie that /?token= sets)."""
    config, warnings = prepare(ServeConfig(host="10.1.2.3"))
    assert config.token and len(config.token) >= 20 and warnings and "token" in warnings[0]
    assert prepare(ServeConfig(host="127.0.0.1"))[0].token is None
    app = create_app([lens], config=config)
    with TestClient(app, base_url="http://10.1.2.3:8000") as c:
        r = c.get("/api/health")
        assert r.status_code == 401 and "token" in _detail(r)
        assert c.get("/api/health", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/health", headers={"authorization": f"Bearer {config.token}"}).status_code == 200
        assert c.get(f"/api/health?token={config.token}").status_code == 200
        r = c.get(f"/?token={config.token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/api/health").status_code == 200  # the cookie now carries it
        assert c.get("/api/health", headers={"host": "evil.example"}).status_code == 403


def test_models_health_docs_and_page(client):
    """/api/models, /api/health, the OpenAPI page, and the page with its own plotly.js (no CDN)."""
    models = client.get("/api/models").json()
    assert models["models"][0]["name"] == "tiny-llama" and models["models"][0]["lenses"] == ["logit"]
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in ("/api/run", "/api/attribute", "/api/models", "/api/health", "/api/open"):
        assert path in spec["paths"], path
    assert "RunRequest" in spec["components"]["schemas"] and "LensResultJSON" in spec["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from the network
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert (
        client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200
    )


def test_attribute_sums_to_the_logit_difference(client):
    """/api/attribute: the components sum to the output row's logit difference; the chart comes along."""
    r = client.post("/api/attribute", json={"prompt": "Hello world, hello", "target": 5})
    assert r.status_code == 200, r.text
    a = r.json()
    assert abs(a["components"][-1]["cumulative"] - a["logit_diff"]) < 1e-3
    assert a["figure"]["data"] and a["components"][0]["component"] == "embed"
    r = client.post("/api/attribute", json={"prompt": "Hello", "target": "Hello world"})
    assert r.status_code == 400 and "Hello world" in _detail(r)  # several tokens: one line saying so


def test_open_uploads_json_and_streamed_parquet_and_refuses_others(client, lens, tmp_path):
    """/api/open holds an uploaded result (JSON, or a streamed Parquet with many prompts: pick one);
    a file that is not a result is a 400 with one line."""
    res = lens.run(["one two", "three four five"], top_k=3)
    r = client.post("/api/open", files={"file": ("r.json", json.dumps(res.to_dict()).encode())})
    assert r.status_code == 200 and r.json()["n_prompts"] == 2
    prompts = [f"{w} {v} hello" for w in WORDS for v in WORDS[:3]]  # 30 prompts
    lens.stream(prompts, tmp_path / "s.parquet", progress=False, top_k=3, batch_size=7)
    r = client.post("/api/open", files={"file": ("s.parquet", (tmp_path / "s.parquet").read_bytes())})
    assert r.status_code == 200, r.text
    opened = r.json()
    assert opened["n_prompts"] == 30 and opened["prompts"][17] == prompts[17]
    v = client.get(f"/api/results/{opened['id']}/view", params={"prompt": 17}).json()
    assert v["prompt"] == 17 and v["tokens"] == lens.run(prompts[17]).tokens[0]
    for name, data in [("x.json", b"{}"), ("x.json", b"[1]"), ("x.bin", b"\x00\x01"), ("x.parquet", b"PAR1junk"),
                       ("x.json", b"")]:  # fmt: skip
        r = client.post("/api/open", files={"file": (name, data)})
        assert r.status_code == 400, (name, r.text)
        assert "result" in _detail(r) or "empty" in _detail(r)


def test_view_pin_compare_and_downloads(client, lens):
    """The page's endpoints: the view of every registry statistic, an exact pin, compare, four downloads."""
    r = client.post(
        "/api/run", json={"prompts": ["Hello world, hello", "one two three"], "targets": [" world"]}
    )
    rid = r.headers["x-result-id"]
    v = client.get(f"/api/results/{rid}/view", params={"prompt": 1}).json()
    assert v["prompt"] == 1 and v["figure"]["data"][0]["type"] == "heatmap"
    stats = {(m["stat"], m["target"]) for m in v["menu"]}
    assert {("top_probs", None), ("entropy", None), ("kl_to_final", None), ("cross_entropy", None),
            ("target_probs", 0), ("target_ranks", 0)} <= stats  # fmt: skip
    for stat, target in stats:
        got = client.get(f"/api/results/{rid}/view", params={"stat": stat, "target": target or 0})
        assert got.status_code == 200 and got.json()["stat"] == stat
    bad = client.get(f"/api/results/{rid}/view", params={"stat": "nonsense"})
    assert bad.status_code == 400 and "nonsense" in _detail(bad)
    assert client.get("/api/results/nope/view").status_code == 404
    pin = client.get(f"/api/results/{rid}/pin", params={"prompt": 0, "column": -1, "row": -1}).json()
    assert pin["exact"] and pin["ranks"][-1] == 1 and len(pin["probs"]) == len(v["row_names"])
    assert pin["top"][0][0] == pin["token"]
    tuned = client.post("/api/run", json={"prompts": "Hello world, hello", "subblocks": True})
    other = tuned.headers["x-result-id"]
    cmp = client.get(f"/api/results/{rid}/compare", params={"other": other})
    assert cmp.status_code == 200 and len(cmp.json()["names"]) == 2
    for fmt, magic in [("json", b"{"), ("parquet", b"PAR1"), ("png", b"\x89PNG"), ("html", b"<!DOCTYPE")]:
        d = client.get(f"/api/results/{rid}/download", params={"format": fmt})
        assert d.status_code == 200 and d.content.startswith(magic), fmt
        assert f'.{fmt}"' in d.headers["content-disposition"]
    back = LensResult.from_dict(json.loads(client.get(f"/api/results/{rid}/download").content))
    assert back.n_prompts == 2
    assert client.get(f"/api/results/{rid}/download", params={"format": "exe"}).status_code == 422


def test_command_line_files_open_by_id_and_a_request_names_no_path(lens, tmp_path):
    """Files given to `serve` are listed and opened by id; no endpoint takes a path."""
    path = lens.run("one two three").save(tmp_path / "saved.json")
    app = create_app([], files=[path])
    with TestClient(app, base_url=BASE) as c:
        files = c.get("/api/models").json()["files"]
        assert files == [{"id": "file0", "name": "saved", "n_prompts": 1}]
        assert c.get("/api/files/file0").json()["name"] == "saved"
        assert c.get("/api/files/../../etc/passwd").status_code == 404
        pin = c.get("/api/results/file0/pin").json()
        assert not pin["exact"] and pin["ranks"][-1] == 1  # no model: read from the kept top-k
        r = c.post("/api/run", json={"prompts": "a"})
        assert r.status_code == 404 and "holds no model" in _detail(r)
    spec = TestClient(app, base_url=BASE).get("/openapi.json").json()
    params = [
        q["name"] for ops in spec["paths"].values() for op in ops.values() for q in op.get("parameters", [])
    ]
    fields = [f for schema in spec["components"]["schemas"].values() for f in schema.get("properties", {})]
    assert not [n for n in params + fields if "path" in n.lower() or "dir" in n.lower()]
