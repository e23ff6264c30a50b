"""Training with the pairwise loss poisoned at chosen micro-batch calls: how tests/test_zero.py
makes a step non-finite, in a launched multi-process run (run as a script, like `python -m
align`) and in-process (`poisoned_loss`).

ALIGN_TEST_POISON="3,4": the calls (counted per rank, training micro-batches only) to poison;
ALIGN_TEST_POISON_KIND: "nan" (loss and gradients NaN) or "inf" (+inf added to the loss: its
gradients stay finite).
"""

from __future__ import annotations

import os
import sys

import torch

import align.methods


def poisoned_loss(steps: set[int], kind: str = "nan"):
    """`PairwiseMethod.loss`, poisoned at the training calls `steps` (1-based)."""
    real = align.methods.PairwiseMethod.loss
    calls = [0]

    def loss(self, policy, reference, batch):
        out = real(self, policy, reference, batch)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] in steps:
                out.loss = out.loss * float("nan") if kind == "nan" else out.loss + float("inf")
        return out

    return loss


if __name__ == "__main__":
    from align.cli import main

    steps = {int(s) for s in os.environ.get("ALIGN_TEST_POISON", "").split(",") if s}
    align.methods.PairwiseMethod.loss = poisoned_loss(steps, os.environ.get("ALIGN_TEST_POISON_KIND", "nan"))
    sys.exit(main(sys.argv[1:]))
