"""The OpenAI-compatible judge client against a live chat-completions server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import json
import logging
import time

import pytest
from judge_server import Reply, user_text
from run_helpers import free_port

from align.evals.judges import HttpJudge, JudgeAuthError, JudgeError, make_judge, retry_after

KEY = "sk-test-0123456789abcdef"


def client(server, **kw) -> HttpJudge:
    settings = dict(base_url=server.url, key_env="ALIGN_TEST_JUDGE_KEY", backoff=0.01, timeout=5)
    return HttpJudge("judge-test", **{**settings, **kw})


def test_normal_answer_and_request_shape(judge_server, monkeypatch):
    monkeypatch.setenv("ALIGN_TEST_JUDGE_KEY", KEY)
    text = client(judge_server).ask("be fair", "rate this [Question] q")
    assert text.startswith("The answer is short. Rating: [[") and text.endswith("]]")
    (req,) = judge_server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "judge-test" and body["temperature"] == 0
    assert body["messages"] == [
        {"role": "system", "content": "be fair"},
        {"role": "user", "content": "rate this [Question] q"},
    ]


def test_no_key_no_authorization_header(judge_server, monkeypatch):
    monkeypatch.delenv("ALIGN_TEST_JUDGE_KEY", raising=False)
    client(judge_server).ask("s", "u")
    assert "Authorization" not in judge_server.requests[0]["headers"]


def test_429_waits_for_retry_after_then_succeeds(judge_server, monkeypatch, caplog):
    monkeypatch.setenv("ALIGN_TEST_JUDGE_KEY", KEY)
    judge_server.script.extend([Reply(status=429, headers={"Retry-After": "1"}), Reply("Rating: [[4]]")])
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="align.evals"):
        assert client(judge_server).ask("s", "u") == "Rating: [[4]]"
    assert time.monotonic() - t0 >= 1.0  # the backoff alone (0.01 s) would not wait this long
    assert judge_server.count() == 2
    assert "HTTP 429" in caplog.text and "retry 1/5 in 1.0 s" in caplog.text
    assert KEY not in caplog.text


def test_5xx_then_success(judge_server):
    judge_server.script.extend([Reply(status=500), Reply(status=503), Reply("Rating: [[9]]")])
    assert client(judge_server).ask("s", "u") == "Rating: [[9]]"
    assert judge_server.count() == 3


def test_timeout_is_retried(judge_server):
    judge_server.script.extend([Reply("Rating: [[1]]", delay=2.0), Reply("Rating: [[2]]")])
    t0 = time.monotonic()
    assert client(judge_server, timeout=0.5).ask("s", "u") == "Rating: [[2]]"
    assert time.monotonic() - t0 < 1.9  # gave up on the slow answer instead of waiting for it
    assert judge_server.count() == 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_not_retried_and_never_show_the_key(judge_server, monkeypatch, caplog, status):
    monkeypatch.setenv("ALIGN_TEST_JUDGE_KEY", KEY)
    judge_server.script.append(Reply(status=status))
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeAuthError) as err:
        client(judge_server).ask("s", "u")
    assert judge_server.count() == 1
    assert f"HTTP {status}" in str(err.value) and "ALIGN_TEST_JUDGE_KEY" in str(err.value)
    assert KEY not in str(err.value) and KEY not in caplog.text


def test_other_4xx_stops_with_the_servers_reason(judge_server):
    judge_server.script.append(Reply(status=400))
    with pytest.raises(JudgeError, match="HTTP 400: scripted 400"):
        client(judge_server).ask("s", "u")
    assert judge_server.count() == 1


def test_gives_up_after_the_retries(judge_server):
    judge_server.responder = lambda body: Reply(status=502)
    with pytest.raises(
        JudgeError, match="no answer after 3 attempts .last: HTTP 502.*run the same command again"
    ):
        client(judge_server, max_retries=2).ask("s", "u")
    assert judge_server.count() == 3


def test_connection_refused_is_transient_then_reported():
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge = HttpJudge("m", base_url=url, backoff=0.01, max_retries=1, timeout=2)
    with pytest.raises(JudgeError, match="no answer after 2 attempts .last: ConnectionRefusedError"):
        judge.ask("s", "u")


def test_malformed_answer_is_a_clear_error(judge_server):
    judge_server.script.append(Reply(raw=b"<html>proxy error</html>"))
    with pytest.raises(JudgeError, match="not a chat-completions answer: '<html>proxy error</html>'"):
        client(judge_server).ask("s", "u")


def test_concurrent_requests_keep_their_order(judge_server):
    judge_server.responder = lambda body: Reply(
        f"echo {user_text(body)}", delay=0.05 * (hash(user_text(body)) % 3)
    )
    prompts = [("s", f"prompt {i}") for i in range(9)]
    assert client(judge_server, workers=4).complete(prompts) == [f"echo prompt {i}" for i in range(9)]
    assert judge_server.count() == 9


def test_retry_after_forms():
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    later = email.utils.format_datetime(email.utils.localtime().astimezone(), usegmt=False)
    assert retry_after({"Retry-After": later}) == pytest.approx(0.0, abs=1.5)
    in_5s = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.0 <= retry_after({"Retry-After": in_5s}) <= 5.0
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None


def test_judge_specs():
    assert make_judge("openai:gpt-4o", base_url="http://x/v1").name == "openai:gpt-4o"
    assert make_judge("hf:tiny-smollm2").name == "hf:tiny-smollm2"  # loads lazily: nothing read yet
    for bad in ("gpt-4", "openai:", "local:x"):
        with pytest.raises(JudgeError, match="expected openai:MODEL"):
            make_judge(bad)
    with pytest.raises(JudgeError, match="--judge-base-url applies to openai"):
        make_judge("hf:tiny-smollm2", base_url="http://x/v1")


def _error(status: int, message: str) -> Reply:
    return Reply(status=status, raw=json.dumps({"error": {"message": message}}).encode())


def test_judge_max_new_tokens_bounds_a_served_judge(judge_server):
    """--judge-max-new-tokens reaches the request (a small served judge that rambles would fill the
    server's context otherwise); without it a served judge asks for FastChat's 2048."""
    from align.evals.mt_bench import EvalConfig

    EvalConfig(judge="openai:j", judge_base_url=judge_server.url, judge_max_new_tokens=64).make_judge().ask(
        "s", "u"
    )
    make_judge("openai:j", base_url=judge_server.url).ask("s", "u")
    assert [r["body"]["max_tokens"] for r in judge_server.requests] == [64, 2048]
    assert make_judge("hf:smollm2-135m-instruct").max_new_tokens == 512  # a local judge's default stays


def test_a_server_error_shows_the_servers_text(judge_server):
    """llama.cpp answers HTTP 500 with its reason: the final error must carry it, not just the code."""
    judge_server.responder = lambda body: _error(500, "Context size has been exceeded.")
    with pytest.raises(JudgeError, match=r"last: HTTP 500: Context size has been exceeded\."):
        client(judge_server, max_retries=1).ask("s", "u")


def test_max_completion_tokens_when_the_model_refuses_max_tokens(judge_server, caplog):
    """OpenAI's reasoning models refuse max_tokens with HTTP 400 naming max_completion_tokens: auto
    resends with it once and keeps it; an explicit max_tokens does not switch."""
    refusal = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."

    def strict(body):
        return _error(400, refusal) if "max_tokens" in body else Reply(f"ok {body['max_completion_tokens']}")

    judge_server.responder = strict
    judge = client(judge_server, max_tokens=99)
    with caplog.at_level(logging.WARNING, logger="align.evals"):
        assert judge.ask("s", "u") == "ok 99"
        assert judge.ask("s", "u2") == "ok 99"
    sent = [sorted(k for k in r["body"] if k.startswith("max_")) for r in judge_server.requests]
    assert sent == [["max_tokens"], ["max_completion_tokens"], ["max_completion_tokens"]]
    assert "refuses max_tokens" in caplog.text
    with pytest.raises(JudgeError, match="HTTP 400: Unsupported parameter"):
        client(judge_server, token_param="max_tokens").ask("s", "u")
    assert client(judge_server, token_param="max_completion_tokens").ask("s", "u") == "ok 2048"
    with pytest.raises(JudgeError, match="--judge-token-param"):
        client(judge_server, token_param="tokens")
