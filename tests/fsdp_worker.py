"""One rank of the FSDP2 check (tests/test_fsdp.py): `torch.distributed.run --nproc_per_node 2`.

Wraps our SequenceScorer the way Accelerate's FSDP2 does (`fully_shard` on every module of the
classes in `_no_split_modules`, then the root), trains DPO steps with each rank on its half of the
batch, checkpoints through align/sharding.py, resumes into a freshly sharded model and trains on.
The same steps unsharded (whole batch, one process) are the reference. Rank 0 writes the numbers.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from align import sharding
from align.data.batches import PairBatch, collate_pairs
from align.logprobs import SequenceScorer
from align.models import add_lora, tiny_model
from align.objectives import get_objective
from align.recipe import LoraConfig
from align.reference import AdapterOffReference

STEPS, RESUME_AT, PAIRS = 4, 2, 8


def build(shard: bool):
    torch.manual_seed(0)
    base = tiny_model(seed=0)
    peft = add_lora(base, LoraConfig(r=4, dropout=0.0))
    scorer = SequenceScorer(peft)
    units = 0
    if shard:
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for m in scorer.modules():
            if type(m).__name__ in scorer._no_split_modules:
                fully_shard(m, mesh=mesh)
                units += 1
        fully_shard(scorer, mesh=mesh)
    params = [p for p in peft.parameters() if p.requires_grad]
    return peft, scorer, torch.optim.AdamW(params, lr=1e-2), units


def batches() -> list[list[dict]]:
    g = torch.Generator().manual_seed(1)
    ids = lambda k: torch.randint(3, 1000, (k,), generator=g).tolist()
    return [
        [
            {
                "index": i,
                "prompt_ids": ids(4 + i),
                "chosen_ids": ids(2 + i % 3) + [2],
                "rejected_ids": ids(5 - i % 4) + [2],
            }
            for i in range(PAIRS)
        ]
        for _ in range(STEPS)
    ]


def step(peft, scorer, opt, examples: list[dict], n_total: int) -> float:
    batch = collate_pairs(examples, 2)
    ref = AdapterOffReference(scorer, peft)(batch)
    pol = scorer(**batch.model_inputs())
    out = get_objective("dpo").fn(PairBatch.split(pol), PairBatch.split(ref), 0.1)
    (out.loss.sum() / len(examples)).backward()  # per-rank mean; FSDP averages over ranks
    norm = torch.nn.utils.clip_grad_norm_([p for p in peft.parameters() if p.requires_grad], 1.0)
    assert torch.isfinite(
        norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    )  # as the loop reads it
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss.detach().sum())


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    data = batches()

    peft, scorer, opt, _ = build(shard=False)  # the reference: whole batches, unsharded
    for b in data:
        step(peft, scorer, opt, b, PAIRS)
    plain = sharding.adapter_state(peft)

    peft, scorer, opt, units = build(shard=True)
    half = lambda b: b[rank * PAIRS // world : (rank + 1) * PAIRS // world]
    for b in data[:RESUME_AT]:
        step(peft, scorer, opt, half(b), PAIRS)
    weights = sharding.adapter_state(peft)
    optim = sharding.optimizer_state(peft, opt)  # full on rank 0 (cpu_offload), empty elsewhere
    saved = f"{out_dir}/optimizer.pt"
    if rank == 0:
        torch.save(optim, saved)
    dist.barrier()

    peft, scorer, opt, _ = build(shard=True)  # "resume": a fresh sharded model, state read back
    sharding.load_adapter_state(peft, weights)
    sharding.load_optimizer_state(peft, opt, torch.load(saved, weights_only=True))
    resumed_ok = max(float((sharding.adapter_state(peft)[k] - weights[k]).abs().max()) for k in weights)
    for b in data[RESUME_AT:]:
        step(peft, scorer, opt, half(b), PAIRS)
    sharded = sharding.adapter_state(peft)

    layers = [m for m in scorer.modules() if type(m).__name__ in scorer._no_split_modules]
    report = {
        "world": world,
        "units": units,
        "layers_are_fsdp_units": all(isinstance(m, FSDPModule) for m in layers),
        "sharded_params": sharding.is_sharded(peft),
        "local_shard_smaller": all(
            p.to_local().numel() < p.numel() for p in peft.parameters() if p.dim() and p.shape[0] >= world
        ),
        "keys_equal": sorted(plain) == sorted(sharded),
        "max_abs_diff": max(float((plain[k] - sharded[k]).abs().max()) for k in plain),
        "max_abs_value": max(float(v.abs().max()) for v in plain.values()),
        "reload_diff": resumed_ok,
        "optimizer_entries": len(torch.load(saved, weights_only=True)["state"]),
    }
    if rank == 0:
        with open(f"{out_dir}/report.json", "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
