"""KTO through the data layer, the loop and the run directory (tiny model, real tokenizer)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from run_helpers import adapter, launch_two, max_abs_diff, multi_process_overrides, run_tiny

from align.data.batches import collate_unpaired, kl_partners
from align.data.packing import PAD_SEGMENT
from align.util.errors import AlignError

KTO = ("method=kto", "data.card=align_thumbs_v1")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def bot(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(labels: list) -> list[dict]:
    return [
        {"prompt": user(f"Question {i}?"), "completion": bot(f"Answer {i}."), "label": v}
        for i, v in enumerate(labels)
    ]


@pytest.mark.parametrize("n", [2, 3, 7, 100])
def test_kl_partners_are_a_derangement_fixed_by_the_seed(n):
    p = kl_partners(n, seed=3)
    assert sorted(p) == list(range(n))  # every completion used once
    assert all(p[i] != i for i in range(n))  # never a record with its own completion
    assert p == kl_partners(n, seed=3) and (n < 7 or p != kl_partners(n, seed=4))  # 3-cycles: only 2 exist


def test_collate_unpaired_layout_and_kl_truncation():
    examples = [
        {"index": 0, "prompt_ids": [5, 6, 7], "completion_ids": [8, 2], "label": True},
        {"index": 1, "prompt_ids": [9], "completion_ids": [10, 11, 12, 13, 2], "label": False},
    ]
    kl = [examples[1]["completion_ids"], examples[0]["completion_ids"]]  # each the other's
    b = collate_unpaired(examples, kl, pad_id=2, max_length=6)
    assert b.desirable.tolist() == [True, False]
    # rows 0..N-1: own completions; rows N..2N-1: KL rows (record 0's KL completion cut to fit 6 tokens)
    assert b.completion_len.tolist() == [2, 5, 3, 2]
    assert b.completion_ids[2, :3].tolist() == [10, 11, 12]
    assert b.packed is not None and (b.packed["segment"] != PAD_SEGMENT).sum() == 3 + 2 + 3 + 1 + 5 + 2


def test_tiny_kto_run_learns_and_records_everything(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "kto"
    summary = run_tiny(out, *KTO, "train.max_steps=8", "optim.lr=5e-3", "data.max_eval_examples=16")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["objective"]["objective"] == "kto"
    assert manifest["data"]["labels"]["from_pairs"] is False
    assert manifest["data"]["labels"]["desirable"] + manifest["data"]["labels"]["undesirable"] == 32
    before, after = summary["before"], summary["after"]
    assert before["eval/reward_gap"] == 0.0  # policy == reference before training
    assert after["eval/reward_gap"] > before["eval/reward_gap"]  # desirable rewarded above undesirable
    assert after["eval/count/desirable"] + after["eval/count/undesirable"] == 16
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "train/loss" in x]
    assert len(train) == 8
    for x in train:  # per-class counts per step add up to the step's examples
        assert x["train/count/desirable"] + x["train/count/undesirable"] == 4
        assert x["train/kl"] >= 0
    assert any(x["train/kl"] > 0 for x in train)  # z0 moves once the policy does


@pytest.mark.parametrize("size", [1, 3])
def test_batch_size_one_and_odd_sizes_train(tmp_path, size):
    """TRL rejects per-device batch size 1 (its KL rows rotate within the batch); ours are fixed
    per record, so one record per step, or an odd number, works the same way."""
    summary = run_tiny(tmp_path / "one", *KTO, f"train.per_device_batch_size={size}", "train.max_steps=3")
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0
    assert summary["after"]["eval/kl"] == summary["after"]["eval/kl"]  # defined (not NaN)


def test_pairs_are_unpaired_for_kto_and_the_log_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run_tiny(tmp_path / "u", "method=kto", "train.max_steps=1", "report.eval_before=false")
    manifest = json.loads((tmp_path / "u" / "manifest.json").read_text())
    labels = manifest["data"]["labels"]
    assert labels["from_pairs"] is True and labels["desirable"] == labels["undesirable"]
    assert "unpaired into" in caplog.text and "(unpaired from pairs)" in caplog.text


def test_ratings_need_a_threshold(tmp_path, capsys):
    from align.cli import main

    data = write_jsonl(tmp_path / "ratings.jsonl", rows([5, 1, 4, 2, 5, 3]))
    common = ["train", "tests/tiny.yaml", "method=kto", f"data.path={data}", "data.card=null"]
    code = main([*common, f"output_dir={tmp_path / 'a'}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{data}: record 1: field 'label': rating without threshold" in err or "line 1" in err
    assert "data.label_threshold" in err


def test_ratings_with_a_threshold_and_thumbs_labels_train(tmp_path):
    data = write_jsonl(tmp_path / "ratings.jsonl", rows([5, 1, 4, 2, 5, 3, 4, 1] * 2))
    args = (
        "method=kto",
        f"data.path={data}",
        "data.card=null",
        "train.max_steps=1",
        "report.eval_before=false",
    )
    summary = run_tiny(tmp_path / "r", *args, "data.label_threshold=4", "data.heldout_fraction=0")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["data"]["labels"] == {"desirable": 8, "undesirable": 8, "from_pairs": False}
    assert summary["steps"] == 1
    thumbs = write_jsonl(tmp_path / "thumbs.jsonl", rows(["up", "down", "UP", "down"] * 4))
    run_tiny(tmp_path / "t", "method=kto", f"data.path={thumbs}", "data.card=null", "train.max_steps=1")


def test_one_class_is_an_error_naming_the_source_and_field(tmp_path):
    data = write_jsonl(tmp_path / "ups.jsonl", rows([True] * 12))
    with pytest.raises(
        AlignError, match=r"ups\.jsonl: field 'label': all \d+ training records are desirable"
    ):
        run_tiny(tmp_path / "x", "method=kto", f"data.path={data}", "data.card=null")


def test_two_processes_equal_one(tmp_path):
    """z0 is a global sum over global count: 2 ranks x 2 records == 1 rank x 4 records."""
    common = (*KTO, "train.max_steps=3", "optim.lr=1e-2", "lora.dropout=0.0", *multi_process_overrides())
    run_tiny(tmp_path / "one", "train.per_device_batch_size=4", *common)
    proc = launch_two(tmp_path / "two", "train.per_device_batch_size=2", *common)
    assert proc.wait(timeout=300) == 0, (tmp_path / "two.log").read_text()[-3000:]
    assert max_abs_diff(adapter(tmp_path / "one"), adapter(tmp_path / "two")) < 1e-5


def test_resume_equals_uninterrupted(tmp_path):
    from align.engine.checkpoint import list_checkpoints

    common = (*KTO, "train.max_steps=4", "train.save_every=2", "train.keep_checkpoints=5", "lora.dropout=0.1")
    run = tmp_path / "run"
    run_tiny(run, *common)
    reference = adapter(run)
    shutil.rmtree(list_checkpoints(run)[-1])  # as if killed after step 2
    shutil.rmtree(run / "adapter")
    assert run_tiny(run, *common, resume=True)["steps"] == 4
    assert max_abs_diff(adapter(run), reference) < 1e-6


def test_precomputed_reference_equals_adapter_off(tmp_path):
    """The table holds each record's own and KL-row reference log-probs (the KL partner is fixed
    per record, so it can be cached)."""
    from align.util.files import cache_dir

    common = (*KTO, "train.max_steps=3", "lora.dropout=0.0")
    run_tiny(tmp_path / "live", *common)
    run_tiny(tmp_path / "pre", *common, "reference=precompute")
    fingerprint = json.loads((tmp_path / "pre" / "manifest.json").read_text())["data"]["fingerprint"]
    assert list((cache_dir() / "reference").glob(f"{fingerprint}-*-train.safetensors"))
    assert max_abs_diff(adapter(tmp_path / "live"), adapter(tmp_path / "pre")) < 1e-5


def _one_class_rank(rank: int, init: str, out_dir: str) -> None:
    """Rank 0 holds 3 desirable records, rank 1 one undesirable: z0 = global sum / global count."""
    import torch.distributed as dist

    from align.data.batches import UnpairedBatch
    from align.methods import KTOMethod
    from align.objectives import SeqLogps

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    n = 3 if rank == 0 else 1
    # rows: n own completions (log-ratio r = 1), then n KL rows (log-ratio 1 on rank 0, 5 on rank 1)
    pol = torch.cat([torch.full((n,), -2.0), torch.zeros(n)]).requires_grad_()
    ref = torch.cat([torch.full((n,), -3.0), torch.full((n,), -1.0 if rank == 0 else -5.0)])
    ones = torch.ones(2 * n)
    batch = UnpairedBatch(
        *(torch.zeros(1, 1),) * 3, index=torch.arange(n), desirable=torch.full((n,), rank == 0)
    )
    out = KTOMethod(beta=0.5).loss(SeqLogps(pol, ones), SeqLogps(ref, ones), batch)
    out.loss.sum().backward()
    torch.save(
        {"z0": out.metrics["kl"][0], "loss": out.loss.detach(), "grad": pol.grad}, f"{out_dir}/{rank}.pt"
    )
    dist.destroy_process_group()


def test_a_rank_with_one_class_and_uneven_counts(tmp_path):
    import torch.multiprocessing as mp
    from run_helpers import free_port

    mp.spawn(_one_class_rank, args=(f"tcp://127.0.0.1:{free_port()}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    # z0 = (3 x 1 + 1 x 5) / 4 = 2 on both ranks; a mean of per-rank means would be (1 + 5) / 2 = 3
    assert float(r0["z0"]) == float(r1["z0"]) == 2.0
    for r in (r0, r1):
        assert torch.isfinite(r["loss"]).all() and torch.isfinite(r["grad"]).all()
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert r0["loss"].tolist() == pytest.approx([1 - sig(0.5 * (1 - 2))] * 3, abs=1e-6)  # desirable, r = 1
    assert r1["loss"].tolist() == pytest.approx([1 - sig(0.5 * (2 - 1))], abs=1e-6)  # undesirable, r = 1


def test_data_inspect_shows_unpaired_records(capsys):
    from align.cli import main

    assert main(["data", "inspect", "align_thumbs_v1"]) == 0
    out = capsys.readouterr().out
    assert "labels (train): " in out and "desirable" in out and "completion " in out
    assert "(loss on" in out and "chosen" not in out
