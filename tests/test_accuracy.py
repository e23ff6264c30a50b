"""Greedy held-out accuracy on the real embedded model: one greedy reply per prompt, scored by
`align.rewards:exact_answer`, the same as `model.generate` would give."""

from __future__ import annotations

import torch

from align.methods.accuracy import answers_of, greedy_accuracy
from align.models.load import load_model, load_tokenizer
from align.recipe import ModelConfig
from align.rewards import exact_answer

QUESTIONS = [  # 9 x 7 SmolLM2-135M-Instruct gets right; the second answer is wrong on purpose
    ("What is 9 times 7? End your reply with 'Answer: <number>'.", "63"),
    ("What is 5 x 9? End your reply with 'Answer: <number>'.", "44"),
]


def test_greedy_accuracy_scores_the_greedy_replies():
    spec = ModelConfig("smollm2-135m-instruct", dtype="float32")
    tok, model = load_tokenizer(spec), load_model(spec).eval()
    prompts = [
        list(
            tok.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for q, _ in QUESTIONS
    ]
    answers = [a for _, a in QUESTIONS]
    acc = greedy_accuracy(model, prompts, answers, tok, max_new_tokens=48)
    replies = []
    for p in prompts:  # each prompt alone: no padding, the library's own greedy decoding
        out = model.generate(
            torch.tensor([p]), max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id
        )
        replies.append(tok.decode(out[0, len(p) :], skip_special_tokens=True))
    assert acc.dtype == torch.float32 and acc.shape == (2,)
    assert acc.tolist() == exact_answer(["", ""], replies, answers) == [1.0, 0.0], replies


def test_answers_of_prepared_examples():
    assert answers_of([{"prompt_ids": [1]}, {"prompt_ids": [2]}]) is None
    assert answers_of([{"answer": "3"}, {"prompt_ids": [2]}]) == ["3", None]


def test_the_report_names_answer_accuracy_for_sampling_methods():
    from align.engine.report import metrics_table

    sampled = metrics_table(
        {"eval/accuracy": 0.36, "eval/score": 0.1}, {"eval/accuracy": 0.54, "eval/score": 0.6}
    )
    assert "answer accuracy (greedy reply's final answer right)" in sampled and "36.0%" in sampled
    assert "pairwise" not in sampled
    reward = metrics_table({"eval/accuracy": 0.5}, {"eval/accuracy": 0.7})
    assert "pairwise accuracy (score of chosen > rejected)" in reward
