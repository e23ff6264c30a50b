"""A Hub id with the Hub away fails in seconds with the offline alternatives, not after 30-50 s.

Every test talks to a real socket on loopback: a closed port (refused), a server that accepts
connections but never answers (timeout), and one that answers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from hub_helpers import answering_server, closed_port, isolate_hub, silent_server

import align.models.load
import align.train
import align.util.offline as offline
from align.cli import main
from align.models.load import load_tokenizer
from align.recipe import ModelConfig
from align.util.errors import ModelError

TINY = str(Path(__file__).resolve().parent / "tiny.yaml")
HUB_ID = "HuggingFaceTB/SmolLM2-135M"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    def at(endpoint: str | None) -> None:
        isolate_hub(monkeypatch, tmp_path / "hf-cache", endpoint)

    return at


def test_refused_connection_fails_fast_and_switches_offline(hub):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    hub(endpoint)
    t0 = time.monotonic()
    with pytest.raises(offline.HubUnreachable) as err:
        offline.require_hub("dataset 'org/data'", "a local .jsonl file")
    assert time.monotonic() - t0 < 3
    msg = str(err.value)
    assert msg.startswith(f"dataset 'org/data': the Hugging Face Hub is unreachable: {endpoint}: ")
    assert "refused" in msg and msg.endswith("Offline alternatives: a local .jsonl file")
    # the rest of the process does not retry: transformers/datasets/huggingface_hub see offline mode
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE is True


def test_silent_server_times_out_within_seconds_and_the_answer_is_cached(hub):
    with silent_server() as port:
        hub(f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        assert offline.hub_reachable() is False
        first = time.monotonic() - t0
        t0 = time.monotonic()
        reason = offline.unreachable_reason()
        again = time.monotonic() - t0
    assert 1 < first < 10
    assert again < 0.1  # once per process
    assert reason == f"the Hugging Face Hub is unreachable: http://127.0.0.1:{port} did not answer within 3 s"


def test_any_http_answer_means_reachable(hub):
    with answering_server(404) as port:
        hub(f"http://127.0.0.1:{port}")
        assert offline.hub_reachable() is True
        offline.require_hub("model 'org/m'")  # no exception
    assert "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_variable_fails_at_once_without_a_probe(hub, monkeypatch, var):
    with silent_server() as port:  # a probe would take 3 s
        hub(f"http://127.0.0.1:{port}")
        monkeypatch.setenv(var, "1")
        t0 = time.monotonic()
        with pytest.raises(ModelError) as err:
            load_tokenizer(ModelConfig(HUB_ID))
        assert time.monotonic() - t0 < 2.5  # a probe of the silent server would take 3 s
    msg = str(err.value)
    assert msg.startswith(
        f"could not load model '{HUB_ID}': {var}=1 is set (offline mode), so the Hugging Face"
    )
    assert "not in the local Hugging Face cache" in msg
    assert "smollm2-135m-instruct" in msg and "tiny-smollm2" in msg and "local directory" in msg


def test_a_model_in_the_local_cache_is_usable_offline(hub, monkeypatch, tmp_path):
    hub(None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hf-cache" / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    assert align.models.load._resolve_path(ModelConfig("org/cached")) == "org/cached"
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        align.models.load._resolve_path(ModelConfig("org/not-cached"))


def test_local_names_never_probe(hub, monkeypatch):
    monkeypatch.setattr(offline, "_probe", lambda *a: pytest.fail("probed the hub for a local model"))
    hub("http://127.0.0.1:9")
    with pytest.raises(ModelError, match="does not exist"):
        load_tokenizer(ModelConfig("./not/here"))
    assert load_tokenizer(ModelConfig("tiny-smollm2")).pad_token is not None


def test_not_a_url_endpoint(hub):
    hub("huggingface.co")
    assert offline.unreachable_reason() == (
        "the Hugging Face Hub is unreachable: HF_ENDPOINT='huggingface.co' is not an http(s) URL"
    )


def test_cli_with_a_hub_id_and_the_hub_away_exits_2_in_seconds(hub, monkeypatch, capsys):
    monkeypatch.setattr(align.train, "run", lambda *a, **k: pytest.fail("training started"))
    hub(f"http://127.0.0.1:{closed_port()}")
    t0 = time.monotonic()
    code = main(["train", TINY, f"model.name={HUB_ID}"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("align: error:")]
    assert line.startswith(
        f"align: error: model.name: could not load model '{HUB_ID}': the Hugging Face Hub is"
    )
    assert "unreachable" in line and "Offline alternatives: `model: smollm2-135m-instruct`" in line


def test_cli_with_a_hub_dataset_and_the_hub_away_exits_2_in_seconds(hub, monkeypatch, capsys):
    monkeypatch.setattr(align.train, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    hub(f"http://127.0.0.1:{closed_port()}")
    t0 = time.monotonic()
    code = main(["data", "inspect", "Anthropic/hh-rlhf"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 10 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("align: error:")]
    assert line.startswith("align: error: Anthropic/hh-rlhf: the Hugging Face Hub is unreachable")
    assert "save_to_disk" in line  # the offline alternatives for data
