"""Deterministic generator for the bundled thumbs-up/down dataset `align_thumbs_v1`.

Derived from align_prefs_v1 (data_cards/align_prefs_v1.md): for each of its 500 pairs, one seeded
coin (p = 0.6) picks which single answer a user "saw": the chosen one, rated `up`, or the rejected
one, rated `down`. Each prompt appears once, so the records are truly unpaired, as real
thumbs feedback is, and the classes are imbalanced (about 3:2) as it usually is.

    python data_cards/build_align_thumbs.py            # rebuild in place (byte-identical)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "align" / "data" / "bundled" / "align_prefs_v1.jsonl"
OUT = ROOT / "align" / "data" / "bundled" / "align_thumbs_v1.jsonl"


def build(source: Path = SOURCE) -> list[dict]:
    rng = random.Random(20261128)
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines():
        pair = json.loads(line)
        up = rng.random() < 0.6
        rows.append(
            {
                "prompt": pair["prompt"],
                "completion": pair["chosen"] if up else pair["rejected"],
                "thumbs": "up" if up else "down",
                "category": pair["category"],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    out = p.parse_args().out
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build()), encoding="utf-8")


if __name__ == "__main__":
    main()
