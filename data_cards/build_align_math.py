"""Deterministic generator for the bundled verifiable-answer prompt set `align_math_v1` (for RL).

Writes align/data/bundled/align_math_v1.jsonl: 400 small arithmetic prompts, each a chat-message
prompt with its answer (an integer, as a string) and a `category` column, so a reward such as
`align.rewards:exact_answer` can check a reply and a run can report held-out accuracy.
Standard library only and seeded: running it twice produces byte-identical output.

    python data_cards/build_align_math.py            # rebuild in place
    python data_cards/build_align_math.py --out X    # write somewhere else

Difficulty is calibrated for SmolLM2-135M-Instruct (greedy accuracy well above 0 and well
below 100%, so RL has both room and signal). See data_cards/align_math_v1.md.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20261207
PER_CATEGORY = 100

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "align" / "data" / "bundled" / "align_math_v1.jsonl"

FORMAT = "End your reply with 'Answer: <number>'."
NAMES = ["Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva", "Raj", "Kim"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "cookies", "books", "coins", "shells", "cards"]


def _add(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 49), rng.randint(2, 9)
    if rng.random() < 0.5:
        a, b = b, a
    ask = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?"])
    return f"{ask.format(a=a, b=b)} {FORMAT}", a + b


def _subtract(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(11, 49), rng.randint(2, 9)
    ask = rng.choice(["What is {a} - {b}?", "Subtract {b} from {a}.", "What is {a} minus {b}?"])
    return f"{ask.format(a=a, b=b)} {FORMAT}", a - b


def _multiply(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    ask = rng.choice(["What is {a} x {b}?", "What is {a} times {b}?", "Multiply {a} by {b}."])
    return f"{ask.format(a=a, b=b)} {FORMAT}", a * b


def _word(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        text, answer = (
            f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
            a + b,
        )
    elif kind == 1:
        a = rng.randint(6, 15)
        b = rng.randint(1, 5)
        text, answer = f"{name} has {a} {item} and gives {b} to a friend. How many {item} are left?", a - b
    elif kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        text, answer = f"There are {a} boxes with {b} {item} in each box. How many {item} are there?", a * b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        other = rng.choice([n for n in NAMES if n != name])
        text = f"{name} has {a} {item} and {other} has {b} {item}. How many {item} do they have together?"
        answer = a + b
    return f"{text} {FORMAT}", answer


CATEGORIES: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "word": _word,
}


def build() -> list[dict]:
    rng = random.Random(SEED)
    rows, seen = [], set()
    for category, make in CATEGORIES.items():
        n = 0
        while n < PER_CATEGORY:
            text, answer = make(rng)
            if text in seen:  # the multiplication table is small: draw again rather than repeat
                continue
            seen.add(text)
            rows.append(
                {"prompt": [{"role": "user", "content": text}], "answer": str(answer), "category": category}
            )
            n += 1
    rng.shuffle(rows)
    _check(rows)
    return rows


def _check(rows: list[dict]) -> None:
    questions = [row["prompt"][-1]["content"] for row in rows]
    assert len(questions) == len(set(questions)) == PER_CATEGORY * len(CATEGORIES), "every prompt once"
    assert all(row["answer"].lstrip("-").isdigit() for row in rows), "answers are integers"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    out = p.parse_args().out
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in build()), encoding="utf-8")


if __name__ == "__main__":
    main()
