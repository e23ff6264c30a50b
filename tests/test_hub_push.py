"""`align push` against a real hub-compatible HTTP server on 127.0.0.1 (tests/hub_server.py).

No monkeypatching of huggingface_hub: align and the test talk to the server through its own
client (`endpoint=` for HfApi and hf_hub_download; HF_ENDPOINT for the process that loads the
adapter with stock PEFT, as a teammate elsewhere would). One tiny PPO run (a policy adapter and,
in PEFT's layout, a value adapter with its head), trained once for the module, is pushed by most
tests; a tiny DPO run is trained by `align train ... hub.push=true`. The run directory is
byte-identical after every push.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hub_helpers import closed_port, hub_server, isolate_hub
from run_helpers import ROOT, TINY, align_env

import align.hub.push
import align.util.offline as offline
from align.cli import main
from align.hub.push import ATTEMPTS, HubAuthError, PushError, push_run

PPO = ROOT / "tests" / "ppo_tiny.yaml"
TOKEN = "hf_AlignPlantedToken_7f3a9c1e5b2d"
BASE_ID = "someorg/tiny-base"  # what the local base directory's config.json names (`_name_or_path`)
IDS = torch.arange(5, 29)[None]
LOAD_ELSEWHERE = """
import sys
import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

base_dir, repo, out = sys.argv[1:4]
logits = {}
for sub in (None, "value"):
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(base, repo, **({"subfolder": sub} if sub else {})).eval()
    with torch.no_grad():
        logits[sub or "adapter"] = model(torch.arange(5, 29)[None]).logits.contiguous()
save_file(logits, out)
"""


@dataclass(frozen=True)
class Trained:
    run: Path
    base_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A finished tiny PPO run whose base model is a local directory naming a hub id, with
    checkpoints, and the eval results an evaluation adds (evals/<name>/)."""
    from transformers import AutoTokenizer

    from align.methods import load_recipe
    from align.models.embedded import embedded_model_dir
    from align.models.load import tiny_model
    from align.train import run as train

    root = tmp_path_factory.mktemp("hub")
    base_dir = root / "tiny-base"
    tiny_model(seed=0).save_pretrained(base_dir)
    AutoTokenizer.from_pretrained(embedded_model_dir()).save_pretrained(base_dir)  # tiny-smollm2's tokenizer
    config = json.loads((base_dir / "config.json").read_text())
    (base_dir / "config.json").write_text(json.dumps({**config, "_name_or_path": BASE_ID}))
    run = root / "run"
    overrides = [f"output_dir={run}", f"model.name={base_dir}", "train.max_steps=2", "train.save_every=1"]
    train(load_recipe(PPO, overrides))
    assert (run / "adapter" / "value" / "value_head.safetensors").is_file()  # PPO's layout, as tested
    (run / "evals" / "mt-bench").mkdir(parents=True)
    (run / "evals" / "mt-bench" / "table.md").write_text(
        "# MT-Bench\n\n| model | overall | turn 1 |\n|---|---:|---:|\n| run | 3.25 | 3.5 |\n"
    )
    (run / "evals" / "heldout").mkdir()
    (run / "evals" / "heldout" / "results.json").write_text(
        json.dumps({"accuracy": 0.625, "_python_version": "3"})
    )
    return Trained(run, base_dir)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    isolate_hub(monkeypatch, tmp_path / "hf-cache")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(align.hub.push, "BACKOFF_S", 0.01)
    with hub_server(TOKEN) as server:
        yield server


def tree(root: Path) -> dict[str, str]:
    """Every path below `root` with its content hash and mtime: equal means nothing was touched."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = f"{digest} {st.st_mtime_ns} {st.st_mode:o}"
    return out


def download(hub, repo: str, name: str, tmp_path: Path, **kwargs) -> bytes:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo, name, endpoint=hub.endpoint, cache_dir=tmp_path / "dl", **kwargs)
    return Path(path).read_bytes()


def local_logits(trained: Trained) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = {}
    for name, sub in (("adapter", "adapter"), ("value", "adapter/value"), ("base", None)):
        base = AutoModelForCausalLM.from_pretrained(trained.base_dir)
        model = PeftModel.from_pretrained(base, trained.run / sub).eval() if sub else base.eval()
        with torch.no_grad():
            out[name] = model(IDS).logits
    return out


def test_cli_push_then_stock_peft_elsewhere_gives_the_same_logits(trained, hub, tmp_path, capsys):
    before = tree(trained.run)
    assert main(["push", str(trained.run), "--repo-id", "alice/tiny-dpo", "--endpoint", hub.endpoint]) == 0
    assert tree(trained.run) == before
    commit = hub.commits("alice/tiny-dpo")[-1]
    assert f"pushed 12 files to alice/tiny-dpo@main: {hub.endpoint}/alice/tiny-dpo/commit/{commit.oid}" in (
        capsys.readouterr().out
    )
    pushed = hub.files("alice/tiny-dpo")  # which files, and why each: test_pushed_files_config_and_card
    assert {p for p in pushed if "checkpoint" in p or p.endswith((".pt", "rng_rank0.safetensors"))} == set()
    assert (trained.run / "checkpoints").is_dir()  # there were checkpoints to leave out
    for name in (
        "adapter_model.safetensors",
        "recipe.yaml",
        "manifest.json",
        "summary.json",
        "metrics.jsonl",
    ):
        assert (
            download(hub, "alice/tiny-dpo", name, tmp_path)
            == (trained.run / ("adapter/" + name if name.startswith("adapter") else name)).read_bytes()
        )
    assert (
        download(hub, "alice/tiny-dpo", "value/adapter_model.safetensors", tmp_path)
        == (trained.run / "adapter" / "value" / "adapter_model.safetensors").read_bytes()
    )

    out = tmp_path / "remote.safetensors"
    env = align_env(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "elsewhere"), HF_TOKEN="")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_ELSEWHERE, str(trained.base_dir), "alice/tiny-dpo", str(out)],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    remote, local = load_file(out), local_logits(trained)
    for name in ("adapter", "value"):
        assert torch.allclose(remote[name], local[name], rtol=0, atol=1e-6), name
        assert (local[name] - local["base"]).abs().max() > 1e-4  # the adapter changes the logits
    assert not torch.allclose(local["adapter"], local["value"])
    assert tree(trained.run) == before


def test_pushed_files_config_and_card(trained, hub, tmp_path):
    result = push_run(trained.run, "alice/card", endpoint=hub.endpoint)
    pushed = hub.files("alice/card")
    assert sorted(pushed) == sorted([".gitattributes", *result.files])
    assert sorted(result.files) == [
        "README.md",  # the model card (PEFT's adapter/README.md gives way to it)
        "adapter_config.json",  # adapter/ goes to the root: PeftModel.from_pretrained(base, repo_id)
        "adapter_model.safetensors",
        "evals/heldout/results.json",
        "evals/mt-bench/table.md",
        "manifest.json",
        "metrics.jsonl",
        "recipe.yaml",
        "summary.json",
        "value/adapter_config.json",  # PEFT's folder for a second adapter: subfolder="value"
        "value/adapter_model.safetensors",
        "value/value_head.safetensors",  # what the run saved next to it
    ]
    for name in ("adapter_config.json", "value/adapter_config.json"):
        config = json.loads(pushed[name])
        assert config["base_model_name_or_path"] == BASE_ID
    local = json.loads((trained.run / "adapter" / "adapter_config.json").read_text())
    assert local["base_model_name_or_path"] == str(trained.base_dir)  # the run keeps its own record
    assert {
        k: v for k, v in json.loads(pushed["adapter_config.json"]).items() if k != "base_model_name_or_path"
    } == {k: v for k, v in local.items() if k != "base_model_name_or_path"}

    card = pushed["README.md"].decode()
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data.to_dict()
    assert meta["base_model"] == BASE_ID and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation" and meta["license"] == "apache-2.0"
    assert meta["tags"] == [f"base_model:adapter:{BASE_ID}", "lora", "transformers", "align", "ppo"]
    assert "datasets" not in meta  # the bundled data card's source is a local file, not a hub dataset
    summary = json.loads((trained.run / "summary.json").read_text())
    score = (summary["before"]["eval/score"], summary["after"]["eval/score"])
    for text in (
        "trained with **PPO**",
        "| method | ppo (Schulman et al. 2017 (clipped surrogate)",
        "| β | 0.05 |",
        "| normalisation | token mean over each minibatch's real response tokens, per process |",
        "| kl_estimator | k1 |",
        "| LoRA | r 8, alpha 16, dropout 0.0, target modules all-linear |",
        "| steps | 2 (0 skipped) |",
        "**align_prefs_v1** (license: Apache-2.0). Small synthetic English preference dataset",
        f"| score | {score[0]:.4g} | {score[1]:.4g} |",
        "## Evaluation: mt-bench\n\n| model | overall | turn 1 |\n|---|---:|---:|\n| run | 3.25 | 3.5 |",
        "## Evaluation: heldout\n\n| metric | value |\n|---|---:|\n| results/accuracy | 0.625 |",
        'PeftModel.from_pretrained(base, "alice/card", subfolder="value")',
        "- `value/value_head.safetensors`: saved with the adapter by the run",
        "hf download alice/card recipe.yaml --local-dir .\n"
        f"align train recipe.yaml output_dir=runs/card model.name={BASE_ID}\n",
    ):
        assert text in card, text
    assert "_python_version" not in card
    assert str(trained.run.parent) not in card and "/tmp" not in card and str(Path.home()) not in card


def test_repush_unchanged_makes_no_commit(trained, hub, tmp_path):
    first = push_run(trained.run, "alice/again", endpoint=hub.endpoint, revision="dev", private=True)
    n_commits = len(hub.commits("alice/again"))
    seen = len(hub.seen("commit"))
    second = push_run(trained.run, "alice/again", endpoint=hub.endpoint, revision="dev", private=True)
    assert first.changed and not second.changed
    assert second.commit_oid == first.commit_oid
    assert len(hub.commits("alice/again")) == n_commits  # no commit, not even an empty one
    assert len(hub.seen("commit")) == seen  # the client left every unchanged file out, then the commit
    assert sorted(hub.files("alice/again", "main")) == [".gitattributes"]  # the branch got the run
    card = hub.files("alice/again", "dev")["README.md"].decode()
    assert 'PeftModel.from_pretrained(base, "alice/again", revision="dev")' in card
    assert "hf download alice/again recipe.yaml --local-dir . --revision dev\n" in card
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):  # private: invisible without the token
        download(hub, "alice/again", "README.md", tmp_path, revision="dev", token=False)
    assert download(hub, "alice/again", "README.md", tmp_path, revision="dev", token=TOKEN).startswith(
        b"---\n"
    )


def test_dropped_connection_on_the_first_commit_is_retried(trained, hub, caplog):
    hub.script("commit", "drop")
    with caplog.at_level(logging.WARNING, logger="align.hub.push"):
        result = push_run(trained.run, "alice/dropped", endpoint=hub.endpoint)
    assert result.changed and len(hub.seen("commit")) == 2
    assert [c.summary for c in hub.commits("alice/dropped")] == [
        "initial commit",
        "align: ppo adapter from run (2 steps)",
    ]
    assert (
        "commit: RemoteProtocolError: Server disconnected without sending a response. (attempt 1 of 4)"
        in caplog.text
    )


def test_a_commit_that_landed_but_lost_its_answer_is_not_made_twice(trained, hub):
    hub.script("commit", "drop_after")
    result = push_run(trained.run, "alice/lost", endpoint=hub.endpoint)
    commits = hub.commits("alice/lost")
    assert len(commits) == 2 and len(hub.seen("commit")) == 1  # the retry found every file there
    assert result.changed and result.commit_oid == commits[-1].oid


def test_5xx_until_the_retries_run_out_is_a_clear_error_and_the_run_is_intact(trained, hub):
    before = tree(trained.run)
    hub.script("commit", *[500] * ATTEMPTS)
    with pytest.raises(PushError) as err:
        push_run(trained.run, "alice/down", endpoint=hub.endpoint)
    msg = str(err.value)
    assert len(hub.seen("commit")) == ATTEMPTS
    assert [c.summary for c in hub.commits("alice/down")] == ["initial commit"]
    initial = hub.commits("alice/down")[0].oid
    assert (
        f"failed: could not commit after {ATTEMPTS} attempts: Server error '500 Internal Server Error'" in msg
    )
    assert "(the hub said: scripted 500)" in msg
    assert (
        "Not uploaded: the commit of 12 files (README.md, adapter_config.json, adapter_model.safetensors"
        in msg
    )
    assert f"alice/down@main stays at commit {initial[:12]} as far as the hub answered" in msg
    assert f"Nothing in {trained.run} was changed" in msg
    assert tree(trained.run) == before
    # the same push again, with the hub back, completes
    assert push_run(trained.run, "alice/down", endpoint=hub.endpoint).changed


def test_401_on_commit_is_an_auth_error_without_retry(trained, hub):
    hub.script("commit", 401)
    with pytest.raises(HubAuthError) as err:
        push_run(trained.run, "alice/denied", endpoint=hub.endpoint)
    assert len(hub.seen("commit")) == 1
    msg = str(err.value)
    assert "the hub answered 401 when asked to commit" in msg and "Not retried" in msg
    assert "it needs write access to 'alice'" in msg and "Nothing in" in msg


def test_a_refused_token_never_leaks_even_when_the_hub_echoes_it(
    trained, monkeypatch, tmp_path, capsys, caplog
):
    isolate_hub(monkeypatch, tmp_path / "hf-cache")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("ALIGN_LOG_LEVEL", "DEBUG")
    with hub_server("hf_TheOnlyTokenTheServerTakes", echo_auth=True) as hub, caplog.at_level(logging.DEBUG):
        code = main(["push", str(trained.run), "--repo-id", "alice/leak", "--endpoint", hub.endpoint])
        with pytest.raises(HubAuthError) as err:
            push_run(trained.run, "alice/leak", endpoint=hub.endpoint)
    out, errout = capsys.readouterr()
    assert code == 2
    assert hub.seen("create_repo")[0]["auth"] == f"Bearer {TOKEN}"  # the token was sent, and echoed back
    assert "Invalid username or password. (you sent: Bearer ***))" in str(err.value)  # reached us, masked
    assert "align: error: push to alice/leak" in errout and "401" in errout
    assert not hub.seen("commit") and "alice/leak" not in hub.repos
    for text in (out, errout, caplog.text, str(err.value), repr(err.value)):
        assert TOKEN not in text


def test_the_token_appears_in_no_pushed_file_log_or_output(trained, hub, monkeypatch, capsys, caplog):
    monkeypatch.setenv("ALIGN_LOG_LEVEL", "DEBUG")
    with caplog.at_level(logging.DEBUG):
        assert main(["push", str(trained.run), "--repo-id", "alice/clean", "--endpoint", hub.endpoint]) == 0
    assert hub.seen("commit")[0]["auth"] == f"Bearer {TOKEN}"
    out, errout = capsys.readouterr()
    for text in (out, errout, caplog.text):
        assert TOKEN not in text
    for name, data in hub.files("alice/clean").items():
        assert TOKEN.encode() not in data, name


def test_the_stored_login_is_used_and_never_printed(trained, tmp_path):
    """`hf auth login` stores the token in HF_HOME/token; a refused one is echoed by the server."""
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text(TOKEN)
    with hub_server("hf_SomeOtherAcceptedToken1", echo_auth=True) as hub:
        env = {
            k: v for k, v in align_env(HF_HOME=str(home)).items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")
        }
        cmd = [
            sys.executable,
            "-m",
            "align",
            "push",
            str(trained.run),
            "--repo-id",
            "bob/x",
            "--endpoint",
            hub.endpoint,
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**env, "ALIGN_LOG_LEVEL": "DEBUG"}, timeout=300
        )
        assert hub.seen("create_repo")[0]["auth"] == f"Bearer {TOKEN}"
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the hub answered 401 when asked to create the repository" in proc.stderr
    assert "(you sent: Bearer ***)" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no-dir", "is not a run directory (it does not exist); nothing was uploaded"),
        (
            "adapter",
            "is not a finished run: missing adapter/adapter_config.json, adapter/adapter_model.safetensors",
        ),
        (
            "summary",
            "is not a finished run: missing summary.json (the run has not finished: `align train RECIPE --resume`",
        ),
        ("manifest", "is not a finished run: missing manifest.json; nothing was uploaded"),
        ("steps", "is not a finished run: summary.json says 1 of 2 steps"),
        ("json", "manifest.json: not readable JSON (JSONDecodeError"),
    ],
)
def test_an_incomplete_run_fails_before_any_network_call(trained, hub, tmp_path, capsys, damage, message):
    run = tmp_path / "copy"
    if damage != "no-dir":
        shutil.copytree(trained.run, run)
    if damage in ("adapter",):
        shutil.rmtree(run / "adapter")
    elif damage in ("summary", "manifest"):
        (run / f"{damage}.json").unlink()
    elif damage == "steps":
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "steps": 1}))
    elif damage == "json":
        (run / "manifest.json").write_text("{not json")
    assert main(["push", str(run), "--repo-id", "alice/broken", "--endpoint", hub.endpoint]) == 2
    assert message in capsys.readouterr().err
    assert hub.seen() == []


def test_an_explicit_endpoint_is_reached_after_offline_mode_was_switched_on_by_a_failed_probe(
    trained, monkeypatch, tmp_path
):
    import huggingface_hub.constants

    isolate_hub(monkeypatch, tmp_path / "hf-cache", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(offline.HubUnreachable):
        offline.require_hub("model 'org/m'")  # e.g. while loading a model: the process goes offline
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    with hub_server(TOKEN) as hub:
        result = push_run(trained.run, "alice/offline", endpoint=hub.endpoint)
    assert result.changed and "README.md" in hub.files("alice/offline")
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_users_own_offline_mode_is_respected(trained, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match=r"HF_HUB_OFFLINE=1 is set \(offline mode\): unset it to reach http"):
        push_run(trained.run, "alice/nope", endpoint=hub.endpoint)
    assert hub.seen() == []


def test_an_unreachable_endpoint_fails_fast_with_nothing_uploaded(trained, hub):
    with pytest.raises(
        PushError, match=r"the Hugging Face Hub is unreachable: .*refused.*; nothing was uploaded"
    ):
        push_run(trained.run, "alice/nowhere", endpoint=f"http://127.0.0.1:{closed_port()}")


def test_include_checkpoints(trained, hub):
    result = push_run(trained.run, "alice/ckpt", endpoint=hub.endpoint, include_checkpoints=True)
    ckpt = sorted(f for f in result.files if f.startswith("checkpoints/"))
    files = (trained.run / "checkpoints").rglob("*")
    assert ckpt == sorted(p.relative_to(trained.run).as_posix() for p in files if p.is_file())
    assert "checkpoints/step-0000002/optimizer.pt" in ckpt
    pushed = hub.files("alice/ckpt")
    assert (
        pushed["checkpoints/step-0000002/optimizer.pt"]
        == (trained.run / "checkpoints/step-0000002/optimizer.pt").read_bytes()
    )
    assert "- `checkpoints/`: intermediate checkpoints" in pushed["README.md"].decode()


def test_train_with_hub_push_pushes_at_the_end(hub, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    argv = ["train", str(TINY), f"output_dir={out}", "train.max_steps=1", "report.eval_before=false"]
    argv += ["hub.push=true", "hub.repo_id=carol/from-train", f"hub.endpoint={hub.endpoint}"]
    with caplog.at_level(logging.WARNING, logger="align.hub.push"):
        assert main(argv) == 0
    pushed = hub.files("carol/from-train")
    assert pushed["adapter_model.safetensors"] == (out / "adapter" / "adapter_model.safetensors").read_bytes()
    assert "pushed 7 files to carol/from-train@main" in capsys.readouterr().out
    # the tiny test model has no hub id: said once, and the card names no base (and no local path)
    assert "the base model 'tiny-smollm2' has no hub id" in caplog.text
    assert json.loads(pushed["adapter_config.json"])["base_model_name_or_path"] is None
    card = pushed["README.md"].decode()
    from huggingface_hub import ModelCard

    meta = ModelCard(card).data.to_dict()
    assert "base_model" not in meta and meta["license"] == "apache-2.0"
    assert meta["tags"] == ["lora", "transformers", "align", "dpo"]
    summary = json.loads((out / "summary.json").read_text())
    for text in (
        "A LoRA adapter (its base model has no hub id: load it onto the base it was trained on), "
        "trained with **DPO**",
        "| method | dpo (Rafailov et al. 2023, Eq. 7",
        "| β | 0.1 |",
        "| normalisation | sum over completion tokens |",
        "| LoRA | r 4, alpha 8, dropout 0.0, target modules all-linear |",
        f"| loss | - | {summary['after']['eval/loss']:.4g} |",  # eval_before=false: no before column
    ):
        assert text in card, text
    assert str(tmp_path) not in card and "/tmp" not in card
    assert "align train recipe.yaml output_dir=runs/from-train hub.push=false" in card


def test_train_with_hub_push_says_training_finished_when_the_push_fails(hub, tmp_path, capsys):
    hub.script("commit", 403)
    out = tmp_path / "run"
    argv = ["train", str(TINY), f"output_dir={out}", "train.max_steps=1", "report.eval_before=false"]
    assert main([*argv, "hub.push=true", "hub.repo_id=carol/denied", f"hub.endpoint={hub.endpoint}"]) == 2
    err = capsys.readouterr().err
    assert "align: error: training finished, but the push did not: push to carol/denied" in err
    assert f"To push again: align push {out} --repo-id carol/denied --endpoint {hub.endpoint}" in err
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def _dir(root: Path, config: dict | None = None) -> str:
    root.mkdir(parents=True)
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return str(root)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("embedded", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("hub-id", "org/model"),
        ("hub-cache-snapshot", "org/cached"),
        ("config-names-a-hub-id", "org/from-config"),
        ("config-names-a-path", None),
        ("bare-dir", None),
        ("random-init", None),
    ],
)
def test_portable_base(tmp_path, case, expected):
    from align.hub.card import portable_base

    cases = {
        "embedded": lambda: ("smollm2-135m-instruct", "/root/.cache/align/models/smollm2-135m-instruct"),
        "hub-id": lambda: ("org/model", "org/model"),
        "hub-cache-snapshot": lambda: ("x", _dir(tmp_path / "hub/models--org--cached/snapshots/0123abcd")),
        "config-names-a-hub-id": lambda: ("x", _dir(tmp_path / "m", {"_name_or_path": "org/from-config"})),
        "config-names-a-path": lambda: ("x", _dir(tmp_path / "m", {"_name_or_path": "/data/ckpt"})),
        "bare-dir": lambda: ("x", _dir(tmp_path / "m", {})),
        "random-init": lambda: ("tiny-smollm2", None),
    }
    name, recorded = cases[case]()
    hub_id, warning = portable_base(name, recorded)
    assert hub_id == expected
    assert (warning is None) == (expected is not None)
    if recorded is not None and expected is None:
        assert f"the base model {recorded} is a local directory that names no hub id" in warning


def test_card_metadata_keeps_peft_keys_and_names_hub_datasets_and_licenses():
    import yaml

    from align.hub.card import DataInfo, card_metadata

    peft = {"base_model": "/data/base", "library_name": "peft", "pipeline_tag": "text-generation"}
    peft["tags"] = ["base_model:adapter:/data/base", "lora", "transformers"]
    meta = yaml.safe_load(card_metadata(peft, "org/base", "kto", DataInfo("d", "CC-BY-4.0", "", "org/data")))
    assert meta == {
        "base_model": "org/base",
        "datasets": ["org/data"],
        "library_name": "peft",
        "license": "cc-by-4.0",
        "pipeline_tag": "text-generation",
        "tags": ["base_model:adapter:org/base", "lora", "transformers", "align", "kto"],
    }
    meta = yaml.safe_load(card_metadata(peft, None, "dpo", DataInfo("d", "Our Own License v2", "", None)))
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["tags"] == ["lora", "transformers", "align", "dpo"]
    assert (meta["license"], meta["license_name"]) == ("other", "our-own-license-v2")
