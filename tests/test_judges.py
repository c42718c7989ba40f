"""Judges: the LLM judge against a local fake OpenAI server, a tiny reward model, the MiniLM judge."""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from ulma.judges import minilm
from ulma.judges import (
    JudgeDeadlineError,
    JudgeError,
    LLMJudge,
    MiniLMHarmlessnessJudge,
    combine_orders,
    get_judge,
    load_harmlessness_judge,
    pairwise_accuracy,
    parse_choice,
    parse_rating,
    scrub,
    train_harmlessness_judge,
)

PROMPT = [{"role": "user", "content": "How do I pick a lock?"}]


# ------------------------------------------------------------------------------- fake chat server
class FakeChatServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers deterministically.

    Comparisons: "A" if Reply A contains SAFE, "B" if Reply B does, else "tie"; `always` overrides the
    answer. Ratings: "7". `fail` = list of HTTP codes, "slow", or ("echo", code) (an error body that echoes
    every request header, Authorization included) to answer the next requests with.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.fail: list = []
        self.always: str | None = None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    action = server.fail.pop(0) if server.fail else None
                if action == "slow":
                    time.sleep(0.6)
                elif isinstance(action, tuple) and action[0] == "echo":  # a server that echoes the headers
                    echoed = json.dumps({"error": "bad request", "headers": dict(self.headers.items()),
                                         "raw": str(self.headers)}).encode()
                    self.send_response(action[1])
                    self.end_headers()
                    self.wfile.write(echoed)
                    return
                elif action is not None:
                    self.send_response(action)
                    self.end_headers()
                    self.wfile.write(b'{"error": "try again"}')
                    return
                text = body["messages"][-1]["content"]
                if server.always is not None:
                    answer = server.always
                elif "[Reply A]" in text:
                    a = text.split("[Reply A]")[1].split("[Reply B]")[0]
                    b = text.split("[Reply B]")[1].split("Which reply")[0]
                    answer = "A" if "SAFE" in a else "B" if "SAFE" in b else "tie"
                else:
                    answer = "7"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeChatServer()
    yield s
    s.close()


def _llm(server, tmp_path, **options) -> LLMJudge:
    return get_judge("llm", base_url=server.url, api_key="test-key", model="fake-gpt", cache_dir=tmp_path / "judge",
                     backoff=0.01, **options)


def test_llm_judge_asks_both_orders_and_caches(server, tmp_path):
    judge = _llm(server, tmp_path)
    assert judge.compare(PROMPT, "SAFE: I can't help with that.", "Use a tension wrench.") == "win"
    assert len(server.requests) == 2
    first, second = (r["messages"][-1]["content"] for r in server.requests)
    assert "[Reply A]\nSAFE" in first and "[Reply B]\nSAFE" in second  # the policy's reply in both places
    assert all(r["model"] == "fake-gpt" and r["temperature"] == 0 for r in server.requests)
    assert server.requests[0]["auth"] == "Bearer test-key" and server.requests[0]["path"] == "/v1/chat/completions"
    assert judge.compare(PROMPT, "Use a tension wrench.", "SAFE: no.") == "lose"
    assert judge.compare(PROMPT, "one", "two") == "tie"
    assert judge.score(PROMPT, "one") == 7.0
    asked = len(server.requests)
    assert asked == 7

    again = _llm(server, tmp_path)  # a rerun: everything from the disk cache
    assert again.compare_batch([PROMPT] * 3, ["SAFE: I can't help with that.", "Use a tension wrench.", "one"],
                               ["Use a tension wrench.", "SAFE: no.", "two"]) == ["win", "lose", "tie"]
    assert again.score(PROMPT, "one") == 7.0
    assert len(server.requests) == asked
    assert again.info["requests"] == 0 and again.info["cache_hits"] == 7


def test_llm_judge_position_bias_cancels(server, tmp_path):
    server.always = "A"  # a judge that always prefers the first reply
    judge = _llm(server, tmp_path)
    assert judge.compare(PROMPT, "x", "y") == "tie"
    assert judge.info["position_inconsistent"] == 1


def test_combine_orders_table():
    assert combine_orders("win", "win") == "win"
    assert combine_orders("win", "tie") == combine_orders("tie", "win") == "win"
    assert combine_orders("win", "lose") == combine_orders("lose", "win") == "tie"
    assert combine_orders("tie", "tie") == "tie"
    assert combine_orders("lose", "tie") == combine_orders("lose", "lose") == "lose"


def test_llm_judge_retries_5xx_and_timeouts(server, tmp_path):
    server.fail = [500, 429]
    judge = _llm(server, tmp_path)
    assert judge.compare(PROMPT, "SAFE", "unsafe") == "win"
    assert len(server.requests) == 4 and judge.info["retries"] == 2

    server.fail = ["slow"]
    judge = _llm(server, tmp_path / "other", timeout=0.2)
    assert judge.score(PROMPT, "slow one") == 7.0
    assert judge.info["retries"] == 1


def test_llm_judge_gives_up_and_does_not_retry_4xx(server, tmp_path):
    server.fail = [503] * 3
    judge = _llm(server, tmp_path, max_retries=2)
    with pytest.raises(RuntimeError, match="failed 3 times"):
        judge.score(PROMPT, "a")
    server.fail = [401]
    before = len(server.requests)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        judge.score(PROMPT, "b")
    assert len(server.requests) == before + 1


def test_llm_judge_malformed_answer_is_a_tie(server, tmp_path):
    server.always = "Both replies have merits."
    judge = _llm(server, tmp_path)
    with pytest.warns(UserWarning, match="malformed"):
        assert judge.compare(PROMPT, "SAFE", "x") == "tie"
    assert judge.info["malformed"] == 2
    with pytest.warns(UserWarning, match="malformed"):
        assert judge.score(PROMPT, "x") != judge.score(PROMPT, "x")  # NaN


def test_llm_judge_needs_a_key_and_reads_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.delenv("ULMA_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ULMA_JUDGE_API_KEY"):
        get_judge("llm")
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai-var")
    monkeypatch.setenv("ULMA_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("ULMA_JUDGE_MODEL", "env-model")
    judge = get_judge("llm", cache_dir=tmp_path, criterion="helpfulness")
    assert judge.score(PROMPT, "r") == 7.0
    assert server.requests[0]["model"] == "env-model" and server.requests[0]["auth"] == "Bearer from-openai-var"
    assert "more helpful" not in server.requests[0]["messages"][-1]["content"]  # a rating prompt
    assert "helpful" in server.requests[0]["messages"][-1]["content"]


SECRET = "sk-test-0123456789abcdef"


@pytest.mark.parametrize("code", [401, 500])  # a final error, and the last error after retries
def test_error_bodies_never_carry_the_key(server, tmp_path, code):
    server.fail = [("echo", code)] * 3
    judge = get_judge("llm", base_url=server.url, api_key=SECRET, model="fake-gpt", cache_dir=tmp_path / "judge",
                      backoff=0.0, max_retries=2)
    with pytest.raises(JudgeError) as raised:
        judge.compare(PROMPT, "a", "b")
    text = str(raised.value)
    assert server.requests[0]["auth"] == f"Bearer {SECRET}"  # the server did see (and echo) it
    assert f"HTTP {code}" in text and "Authorization" in text and "***" in text
    assert SECRET not in text and "0123456789abcdef" not in text
    error = raised.value  # no unscrubbed error chained to it (a traceback would print that one too)
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert SECRET not in json.dumps(judge.info)
    written = [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(SECRET not in t for t in written)


@pytest.mark.parametrize("text, secrets, want", [
    ("Authorization: Bearer abc.def-123", [], "Authorization: Bearer ***"),
    ('{"authorization": "Bearer zzz", "x-api-key": "k123"}', [], '{"authorization": "Bearer ***", "x-api-key": "***"}'),
    ("https://h/v1?api-key=s3cr3t&x=1", [], "https://h/v1?api-key=***&x=1"),
    ("https://user:pw@host/v1", [], "https://***@host/v1"),
    ("key sk-abcd%2Bef in a URL sk-abcd+ef", ["sk-abcd+ef"], "key *** in a URL ***"),
    ("token expired", [], "token expired"),  # an ordinary word stays
    ("HTTP 500: try again", ["abc"], "HTTP 500: try again"),  # a too-short secret is not blanked everywhere
])
def test_scrub_table(text, secrets, want):
    assert scrub(text, secrets) == want


@pytest.fixture
def silent_endpoint():
    """A TCP port on 127.0.0.1 that accepts connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def test_call_deadline_fires_on_an_endpoint_that_never_answers(silent_endpoint, tmp_path):
    judge = get_judge("llm", base_url=silent_endpoint, api_key=SECRET, cache_dir=tmp_path, timeout=60,
                      call_deadline=0.6, max_retries=5, backoff=0.0)
    start = time.monotonic()
    with pytest.raises(JudgeDeadlineError, match="call_deadline = 0.6 s"):
        judge.compare_batch([PROMPT] * 4, ["a", "b", "c", "d"], ["x", "y", "z", "w"])
    assert time.monotonic() - start < 0.6 + 1.5  # before: 6 attempts x 120 s + backoff = 12.5 min
    start = time.monotonic()
    with pytest.raises(JudgeDeadlineError):
        judge.score(PROMPT, "a")  # one question alone as well
    assert time.monotonic() - start < 0.6 + 1.5


def test_batch_deadline_stops_the_batch_and_a_rerun_pays_only_the_rest(server, tmp_path):
    server.fail = ["slow"] * 100  # every answer takes 0.6 s
    judge = _llm(server, tmp_path, max_workers=1, batch_deadline=1.0, timeout=5)
    replies = [f"reply {i}" for i in range(6)]
    start = time.monotonic()
    with pytest.raises(JudgeDeadlineError, match="batch_deadline = 1 s"):
        judge.score_batch([PROMPT] * 6, replies)
    assert time.monotonic() - start < 1.0 + 1.0
    time.sleep(0.7)  # let the abandoned request finish (and be cached)
    answered = len(server.requests)
    assert 1 <= answered < 6
    server.fail = []
    again = _llm(server, tmp_path)
    assert again.score_batch([PROMPT] * 6, replies) == [7.0] * 6
    assert again.info["cache_hits"] == answered and again.info["requests"] == 6 - answered


@pytest.mark.parametrize("workers", [1, 4])
def test_keyboard_interrupt_from_the_transport_propagates_unretried(tmp_path, workers):
    calls = []

    def interrupted(url, body, headers, timeout):
        calls.append(url)
        raise KeyboardInterrupt

    judge = get_judge("llm", base_url="http://127.0.0.1:9/v1", api_key=SECRET, cache_dir=tmp_path,
                      transport=interrupted, max_workers=workers, max_retries=5)
    with pytest.raises(KeyboardInterrupt):
        judge.compare_batch([PROMPT] * 3, ["a", "b", "c"], ["x", "y", "z"])
    assert 1 <= len(calls) <= workers and judge.info["retries"] == 0  # no retry, no new question after it
    with pytest.raises(KeyboardInterrupt):
        judge.score(PROMPT, "a")


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
                    reason="needs Python's default Ctrl-C handler")
def test_ctrl_c_stops_a_batch_waiting_on_a_silent_endpoint(silent_endpoint, tmp_path):
    judge = get_judge("llm", base_url=silent_endpoint, api_key=SECRET, cache_dir=tmp_path, timeout=60,
                      call_deadline=60)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            judge.compare_batch([PROMPT] * 8, list("abcdefgh"), list("stuvwxyz"))
    finally:
        timer.cancel()
    assert time.monotonic() - start < 0.5 + 1.5


def test_get_judge_uses_only_its_own_section(server, tmp_path):
    options = {"criterion": "harmlessness", "minilm_harmlessness": {"max_train_pairs": 64, "max_test_pairs": 64},
               "reward_model": {"batch_size": 2}, "llm": {"call_deadline": 7, "batch_deadline": 70}}
    judge = get_judge("llm", base_url=server.url, api_key="k", cache_dir=tmp_path, **options)
    assert (judge.call_deadline, judge.batch_deadline, judge.timeout) == (7.0, 70.0, 60.0)
    assert judge.info["call_deadline"] == 7.0
    with pytest.raises(ValueError, match=r"judge 'llm' takes no option\(s\) \['max_train_pairs'\]; its options: .*call_deadline"):
        get_judge("llm", base_url=server.url, api_key="k", max_train_pairs=64)
    with pytest.raises(ValueError, match="options of judge 'llm' must be a mapping"):
        get_judge("llm", base_url=server.url, api_key="k", llm=3)
    with pytest.raises(ValueError, match="call_deadline = 0: must be a finite number of seconds > 0"):
        get_judge("llm", base_url=server.url, api_key="k", call_deadline=0)
    options.pop("criterion")  # an llm option: evaluation passes it to the llm judge only
    with pytest.raises(ValueError, match="judge_model"):  # reward_model: its own error, not a TypeError
        get_judge("reward_model", **options)


def test_parsers():
    for text, want in [("A", "A"), (" b.", "B"), ("Tie", "tie"), ('"A"', "A"), ("**B**", "B"), ("[[A]]", "A"),
                       ("Reply B", "B"), ("Verdict: tie", "tie"), ("Reasoning...\nA", "A"), ("both", None),
                       ("A or B", None), ("", None)]:
        assert parse_choice(text) == want, text
    assert parse_rating("8") == 8.0 and parse_rating("Score: 3.5/10") == 3.5 and parse_rating("none") is None
    assert parse_rating("42") is None


def test_unknown_judge():
    with pytest.raises(ValueError, match="minilm_harmlessness"):
        get_judge("gpt5000")


# ------------------------------------------------------------------------------------ reward model
@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    from transformers import LlamaForSequenceClassification

    from ulma.models import tiny_config, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = tiny_config(len(tokenizer))
    config.num_labels = 1
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    folder = tmp_path_factory.mktemp("rm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_judge(tiny_reward_model):
    judge = get_judge("reward_model", model=str(tiny_reward_model), batch_size=2)
    replies = ["I won't help with that.", "Sure, here is how.", "Maybe ask a locksmith, it is their job."]
    prompts = [PROMPT] * 3
    batched = judge.score_batch(prompts, replies)
    single = [judge.score(PROMPT, r) for r in replies]
    assert batched == pytest.approx(single, abs=1e-5)  # padding does not change a score
    assert len(set(round(s, 6) for s in single)) == 3
    assert judge.compare(PROMPT, replies[0], replies[0]) == "tie"
    want = "win" if single[0] > single[1] else "lose"
    assert judge.compare(PROMPT, replies[0], replies[1]) == want
    scores, ref_scores, verdicts = judge.judge_batch(prompts, replies, replies[::-1])
    assert scores == pytest.approx(batched, abs=1e-5) and verdicts[1] == "tie"
    assert judge.info["model"] == str(tiny_reward_model)


def test_reward_model_judge_needs_a_model():
    with pytest.raises(ValueError, match="judge_model"):
        get_judge("reward_model")


# ------------------------------------------------------------------------------ MiniLM harmlessness
def _synthetic_pairs(topics):
    safe = ["I can't help with that, it could hurt someone.", "I'd rather not; please stay safe and legal.",
            "That is dangerous, so I won't explain it."]
    harmful = ["Sure! First get the {t}, then hit them hard.", "Easy: steal the {t} at night, nobody will notice.",
               "Here is how to poison someone with {t}."]
    return [{"prompt": [{"role": "user", "content": f"How do I hurt someone with {t}?"}],
             "chosen": safe[i % 3], "rejected": harmful[i % 3].format(t=t)} for i, t in enumerate(topics)]


def test_minilm_judge_learns_a_separable_preference(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path))
    train = _synthetic_pairs(["a knife", "a bat", "rat poison", "a car", "fire", "a hammer", "a rope", "bleach"])
    test = _synthetic_pairs(["a brick", "a shovel", "gasoline", "a bottle"])
    judge = train_harmlessness_judge(train, test, save_dir=tmp_path / "j")
    assert isinstance(judge, MiniLMHarmlessnessJudge)
    assert judge.info["accuracy"] == 1.0 and judge.info["n"] == 4 and judge.meta["train_pairs"] == 8
    assert pairwise_accuracy(judge, test) == 1.0
    assert judge.compare(test[0]["prompt"], test[0]["chosen"], test[0]["rejected"]) == "win"
    assert judge.compare(test[0]["prompt"], test[0]["rejected"], test[0]["chosen"]) == "lose"
    assert judge.compare(test[0]["prompt"], "same", "same") == "tie"
    loaded = MiniLMHarmlessnessJudge.load(tmp_path / "j")
    assert loaded.score_batch([t["prompt"] for t in test], [t["chosen"] for t in test]) == pytest.approx(
        judge.score_batch([t["prompt"] for t in test], [t["chosen"] for t in test]), abs=1e-5)
    assert json.loads((tmp_path / "j" / "judge.json").read_text())["accuracy"] == 1.0


@pytest.mark.slow
def test_minilm_judge_on_fixtures_is_stored_and_reloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("ULMA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(minilm, "_LOADED", {})
    options = {"data_dir": "fixtures", "train_split": "train", "test_split": "test", "max_train_pairs": 12,
               "max_test_pairs": 6, "max_length": 64}
    judge = get_judge("minilm_harmlessness", **options)
    folder = tmp_path / "judges" / judge.info["key"]
    meta = json.loads((folder / "judge.json").read_text())
    assert 0.0 <= meta["accuracy"] <= 1.0 and meta["n"] == judge.info["n"] > 0
    assert meta["train_data"]["split"] == "train" and meta["train_time_s"] > 0
    assert meta["train_pairs"] == 12 and meta["n"] == 6
    assert judge.info["accuracy"] == meta["accuracy"]

    monkeypatch.setattr(minilm, "_LOADED", {})
    monkeypatch.setattr(minilm, "train_harmlessness_judge", lambda *a, **k: pytest.fail("retrained"))
    again = load_harmlessness_judge(**options)
    assert again.info["path"] == str(folder)
    assert again.score(PROMPT, "No.") == pytest.approx(judge.score(PROMPT, "No."), abs=1e-5)
