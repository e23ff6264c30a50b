"""`align eval mt-bench` end to end: tiny trained runs, a live judge server on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from eval_helpers import eval_config, write_questions
from judge_server import Reply, stable_rating, user_text

from align.cli import main
from align.evals.answers import conversation, generate, render
from align.evals.judges import JudgeAuthError
from align.evals.mt_bench import EvalDirError, evaluate_runs
from align.evals.pairwise import outcome
from align.evals.policies import RunDirError, describe_run, load
from align.evals.questions import load_questions
from align.util.errors import AlignError


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def mean(xs):
    return sum(xs) / len(xs)


def test_scores_match_the_judgments(tiny_runs, judge_server, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl")  # writing, math, stem; two turns each
    out = tmp_path / "eval"
    result = evaluate_runs([tiny_runs["dpo"], tiny_runs["kto"]], out, eval_config(judge_server, questions))
    labels = ["dpo", "kto", "base:tiny-smollm2"]
    assert [r["model"] for r in result.rows] == labels
    answers = rows_of(out / "answers.jsonl")
    assert len(answers) == 3 * 3 * 2 and result.counts["answers_generated"] == 18
    temps = {a["category"]: a["temperature"] for a in answers}
    assert temps == {"writing": 0.7, "math": 0.0, "stem": 0.1}  # MT-Bench's per-category temperatures
    judgments = rows_of(out / "judgments.jsonl")
    assert len(judgments) == 18 == judge_server.count() == result.counts["judge_requests"]
    # every rating is what the server said for that prompt
    said = sorted(stable_rating(r["body"]) for r in judge_server.requests)
    assert said == sorted(j["rating"] for j in judgments)
    # math is judged against its reference; turn 2 sees the turn-1 answer
    q_math = next(q for q in load_questions(questions) if q.category == "math")
    math_prompts = [
        user_text(r["body"]) for r in judge_server.requests if q_math.turns[0] in user_text(r["body"])
    ]
    assert len(math_prompts) == 6 and all(q_math.reference[0] in p for p in math_prompts)
    for j in judgments:
        assert j["prompt"] == ("single-math-v1" if j["category"] == "math" else "single-v1") + (
            "-multi-turn" if j["turn"] == 2 else ""
        )
    # the table's numbers are the judgments' means, in every file
    csv_rows = {r["model"]: r for r in csv.DictReader((out / "scores.csv").open())}
    md = (out / "scores.md").read_text()
    for row in rows_of(out / "scores.jsonl"):
        mine = [j for j in judgments if j["model"] == row["model"]]
        groups = {
            "overall": mine,
            "turn1": [j for j in mine if j["turn"] == 1],
            "turn2": [j for j in mine if j["turn"] == 2],
            **{c: [j for j in mine if j["category"] == c] for c in ("writing", "math", "stem")},
        }
        for name, js in groups.items():
            want = mean([j["rating"] for j in js])
            assert row["scores"][name]["mean"] == pytest.approx(want)
            assert row["scores"][name]["n"] == len(js)
            assert float(csv_rows[row["model"]][name]) == pytest.approx(want)
            assert row["scores"][name]["low"] <= want <= row["scores"][name]["high"]
        assert f"| {row['model']} | {want_fmt(row)} |" in md
    # the frontier: the base is its own reference (KL 0), trained adapters move away from it
    kl = {r["model"]: r["frontier"]["kl"]["mean"] for r in result.rows}
    assert kl["base:tiny-smollm2"] == 0.0 and kl["dpo"] > 0 and kl["kto"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][0]["scores"]["overall"]["mean"] == result.rows[0]["scores"]["overall"]["mean"]
    assert saved["_evaluate_version"]


def want_fmt(row: dict) -> str:
    return f"{row['scores']['overall']['mean']:.2f}"


def test_malformed_ratings_retried_once_then_counted(tiny_runs, judge_server, tmp_path):
    questions = write_questions(tmp_path / "q.jsonl", categories=("writing", "math"))
    qs = {q.category: q for q in load_questions(questions)}
    seen: dict[str, int] = defaultdict(int)

    def responder(body):
        text = user_text(body)
        seen[text] += 1
        if qs["writing"].turns[0] in text:  # never a rating for the writing question
            return Reply("This answer is fine, I would say good.")
        if qs["math"].turns[0] in text and seen[text] % 2 == 1:  # math: only each retry rates
            return Reply("Rating: [[ten]]")
        return Reply("Rating: [[8]]")

    judge_server.responder = responder
    result = evaluate_runs([tiny_runs["dpo"]], tmp_path / "eval", eval_config(judge_server, questions))
    judgments = rows_of(tmp_path / "eval" / "judgments.jsonl")
    assert judge_server.count() == 2 * 4 * 2 == result.counts["judge_requests"]  # every item asked twice
    for j in judgments:
        assert j["tries"] == 2
        if j["category"] == "writing":
            assert j["rating"] is None and j["error"] == "unparsable"
        else:
            assert j["rating"] == 8.0 and "error" not in j
    for row in result.rows:  # 2 writing turns per model counted, excluded from every mean
        assert row["unparsable"] == 2
        assert row["scores"]["overall"]["mean"] == 8.0 and row["scores"]["overall"]["n"] == 2
        assert row["scores"]["writing"]["n"] == 0
    assert "| 2 | 2 |" in result.markdown  # rated, unparsable


def test_resume_after_an_interrupted_eval(tiny_runs, judge_server, tmp_path, capsys):
    questions = write_questions(tmp_path / "q.jsonl")
    out = tmp_path / "eval"
    judge_server.responder = lambda body: (
        Reply(status=401) if judge_server.count() > 5 else Reply(f"[[{stable_rating(body)}]]")
    )
    with pytest.raises(JudgeAuthError):
        evaluate_runs([tiny_runs["dpo"]], out, eval_config(judge_server, questions))
    assert len(rows_of(out / "judgments.jsonl")) == 5  # each finished judgment was kept
    lines = (out / "answers.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 12
    kept = "".join(lines[:-2]) + lines[-2][:25]  # the last two answers lost, one torn mid-line
    (out / "answers.jsonl").write_text(kept)
    lost = [json.loads(line) for line in lines[-2:]]
    assert all(a["model"] == "base:tiny-smollm2" for a in lost)  # answered last, judged last

    judge_server.responder = lambda body: Reply(f"[[{stable_rating(body)}]]")
    before = judge_server.count()
    result = evaluate_runs([tiny_runs["dpo"]], out, eval_config(judge_server, questions))
    assert result.counts["answers_generated"] == 2  # only what was lost
    assert judge_server.count() - before == 12 - 5 == result.counts["judge_requests"]
    assert len({(a["model"], a["question_id"], a["turn"]) for a in rows_of(out / "answers.jsonl")}) == 12

    before = judge_server.count()
    code = main(
        ["eval", "mt-bench", str(tiny_runs["dpo"]), "--out", str(out), "--questions", str(questions)]
        + ["--judge", "openai:judge-test", "--judge-base-url", judge_server.url, "--max-new-tokens", "6"]
    )
    printed = capsys.readouterr().out
    assert code == 0 and judge_server.count() == before  # nothing recomputed
    assert "answers generated 0" in printed and "judge requests 0" in printed
    assert (out / "scores.md").read_text().strip() in printed


def test_cli_auth_error_is_one_line(tiny_runs, judge_server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret-value-42")
    judge_server.responder = lambda body: Reply(status=401)
    questions = write_questions(tmp_path / "q.jsonl", categories=("stem",))
    code = main(
        [
            "eval",
            "mt-bench",
            str(tiny_runs["dpo"]),
            "--out",
            str(tmp_path / "e"),
            "--questions",
            str(questions),
        ]
        + ["--judge", "openai:j", "--judge-base-url", judge_server.url, "--judge-key-env", "MY_JUDGE_KEY"]
        + ["--max-new-tokens", "4", "--no-baseline", "--no-kl"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("align: error:")]
    assert "HTTP 401" in line and "MY_JUDGE_KEY" in line and "sk-very-secret" not in err
    assert judge_server.requests[0]["headers"]["Authorization"] == "Bearer sk-very-secret-value-42"


def test_eval_dir_refuses_other_settings_and_bad_run_dirs(tiny_runs, judge_server, tmp_path, capsys):
    questions = write_questions(tmp_path / "q.jsonl", categories=("stem",))
    out = tmp_path / "eval"
    cfg = eval_config(judge_server, questions, baseline=False, kl=False)
    evaluate_runs([tiny_runs["dpo"]], out, cfg)
    with pytest.raises(EvalDirError, match="max_new_tokens=6, not 7"):
        evaluate_runs([tiny_runs["dpo"]], out, eval_config(judge_server, questions, max_new_tokens=7))
    other = write_questions(tmp_path / "q2.jsonl", categories=("math",))
    with pytest.raises(EvalDirError, match="holds answers to other questions"):
        evaluate_runs([tiny_runs["dpo"]], out, eval_config(judge_server, other))
    impostor = tmp_path / "runs" / "dpo"  # same label, different adapter
    shutil.copytree(tiny_runs["kto"], impostor)
    with pytest.raises(EvalDirError, match="model 'dpo' was answered by different weights"):
        evaluate_runs([impostor], out, cfg)
    no_adapter = tmp_path / "unfinished"
    shutil.copytree(tiny_runs["dpo"], no_adapter)
    shutil.rmtree(no_adapter / "adapter")
    with pytest.raises(RunDirError, match="no finished adapter"):
        describe_run(no_adapter)
    code = main(["eval", "mt-bench", str(tmp_path), "--judge", "openai:j", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and f"align: error: {tmp_path} is not a run directory: no recipe.yaml" in err
    with pytest.raises(AlignError, match="does not exist"):
        describe_run(tmp_path / "absent")


def test_pairwise_both_orders(tiny_runs, judge_server, tmp_path):
    assert outcome("A", "B") == "A" and outcome("B", "A") == "B"  # both orders agree
    assert outcome("A", "A") == "tie" and outcome("tie", "tie") == "tie" and outcome("A", "tie") == "tie"
    assert outcome(None, "A") is None
    questions = write_questions(tmp_path / "q.jsonl", categories=("writing", "math"))
    judge_server.responder = lambda body: Reply(
        "[[A]]" if "Assistant A" in user_text(body) else f"[[{stable_rating(body)}]]"
    )  # a judge that always prefers the first position
    cfg = eval_config(judge_server, questions, pairwise=True, baseline=False, kl=False)
    result = evaluate_runs([tiny_runs["dpo"], tiny_runs["kto"]], tmp_path / "eval", cfg)
    pairs = rows_of(tmp_path / "eval" / "pairwise_judgments.jsonl")
    assert len(pairs) == 2 * 2 * 2 and {p["order"] for p in pairs} == {"AB", "BA"}
    assert {p["prompt"] for p in pairs} == {
        "pair-v2",
        "pair-v2-multi-turn",
        "pair-math-v1",
        "pair-math-v1-multi-turn",
    }
    assert all(p["verdict"] == "A" for p in pairs)
    p = result.pairwise
    assert (p["wins"], p["ties"], p["losses"]) == (0, 4, 0)  # position bias cancels out: all ties
    assert p["score_a"]["mean"] == 0.5 and p["score_a"]["n"] == 4
    assert "| dpo | kto | 0 | 4 | 0 | 0 | 0.50 |" in p["markdown"]
    assert (tmp_path / "eval" / "pairwise.md").read_text().strip() == p["markdown"]


def test_local_judge_and_left_padding(tiny_runs, tmp_path):
    from model_helpers import randomize_lora_b

    questions = write_questions(tmp_path / "q.jsonl", categories=("stem",))
    cfg = eval_config(None, questions, judge="hf:tiny-smollm2", judge_base_url=None, baseline=False, kl=False)
    cfg.judge_max_new_tokens = 8
    result = evaluate_runs([tiny_runs["dpo"]], tmp_path / "eval", cfg)
    judgments = rows_of(tmp_path / "eval" / "judgments.jsonl")
    assert len(judgments) == 2 and all(j["judge"] == "hf:tiny-smollm2" for j in judgments)
    failed = sum(j["rating"] is None for j in judgments)  # a random 2-layer judge rarely rates
    assert all(j["tries"] == (2 if j["rating"] is None else 1) for j in judgments)
    assert result.rows[0]["unparsable"] == failed

    ref = describe_run(tiny_runs["dpo"])
    model, tok = load(ref)
    randomize_lora_b(model, scale=2.0)  # varied tokens (a tiny random model repeats one)
    q = load_questions(questions)[0]
    prompts = [
        render(tok, conversation(q, 1, [])),
        render(tok, conversation(q, 2, ["an earlier answer"])),
        render(tok, [{"role": "user", "content": "x"}]),
    ]
    assert "an earlier answer" in tok.decode(prompts[1])  # turn 2 sees the model's turn-1 answer
    batch = generate(model, tok, prompts, 0.0, 10, 0)
    alone = [generate(model, tok, [p], 0.0, 10, 0)[0] for p in prompts]
    assert [g.ids for g in batch] == [g.ids for g in alone]  # left padding changes nothing
    assert len({tuple(g.ids) for g in batch}) == 3
    sampled = generate(model, tok, prompts, 0.7, 10, 3)
    assert sampled == generate(model, tok, prompts, 0.7, 10, 3) and sampled != batch  # seeded
    # a checkpoint's generation_config.json cannot bend the distribution we sample from
    model.generation_config.update(repetition_penalty=5.0, top_p=0.05, top_k=2, temperature=0.1)
    assert generate(model, tok, prompts, 0.0, 10, 0) == batch
    assert generate(model, tok, prompts, 0.7, 10, 3) == sampled


def test_reward_column_from_a_reward_callable(tiny_runs, judge_server, tmp_path):
    """The frontier's reward model is any `score(prompts, responses) -> list[float]`."""
    questions = write_questions(tmp_path / "q.jsonl", categories=("writing", "stem"))
    calls = []

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        calls.append(len(prompts))
        return [len(p) / 100 + len(r) for p, r in zip(prompts, responses)]

    out = tmp_path / "eval"
    cfg = eval_config(judge_server, questions)
    result = evaluate_runs([tiny_runs["dpo"]], out, cfg, reward_fn=reward, reward_name="length")
    samples = rows_of(out / "kl.jsonl")
    latest = {(s["model"], s["question_id"]): s for s in samples}  # a later line replaces an earlier one
    assert len(latest) == 4 and all(s["reward_model"] == "length" for s in latest.values())
    texts = {q.question_id: q.turns[0] for q in load_questions(questions)}
    for row in result.rows:  # the base is sampled too (its KL stays 0)
        mine = [s for (m, _), s in latest.items() if m == row["model"]]
        want = mean([len(texts[s["question_id"]]) / 100 + len(s["text"]) for s in mine])
        assert row["frontier"]["reward"]["mean"] == pytest.approx(want)
    assert result.rows[1]["frontier"]["kl"]["mean"] == 0.0
    assert "| KL | reward |" in result.markdown and sum(calls) == 4
    again = evaluate_runs([tiny_runs["dpo"]], out, cfg, reward_fn=reward, reward_name="length")
    assert again.counts["rewards_scored"] == 0 and sum(calls) == 4  # cached


def test_one_run_is_evaluated_beside_it_where_push_finds_it(tiny_runs, judge_server, tmp_path, capsys):
    from align.hub.card import eval_tables

    run = tmp_path / "dpo"
    shutil.copytree(tiny_runs["dpo"], run)
    questions = write_questions(tmp_path / "q.jsonl", categories=("stem",))
    argv = ["eval", "mt-bench", str(run), "--questions", str(questions), "--judge", "openai:judge-test"]
    argv += ["--judge-base-url", judge_server.url, "--max-new-tokens", "4", "--no-baseline", "--no-kl"]
    assert main(argv) == 0
    capsys.readouterr()
    md = (run / "evals" / "mt_bench" / "scores.md").read_text()
    ((name, table),) = eval_tables(run)
    assert name == "mt_bench" and table in md and "| dpo |" in table


def test_reward_run_scores_the_samples_through_the_cli(tiny_runs, judge_server, tmp_path, capsys):
    """`--reward-run`: a trained reward run scores each model's samples (the frontier's reward);
    its scores equal the reward model's own on the same prompt + response sequences."""
    from run_helpers import run_tiny

    from align.models.reward_model import reward_function

    reward_run = tmp_path / "reward"
    run_tiny(
        reward_run,
        "method=reward",
        "train.max_steps=1",
        "data.max_train_examples=8",
        "data.max_eval_examples=2",
    )
    score = reward_function(reward_run)
    a, b = score(["Hi", "Name a colour."], ["Hello!", "Blue."]), score(["Name a colour."], ["Blue."])
    assert a[1] == pytest.approx(b[0], abs=1e-5) and a[0] != a[1]  # batching and padding change nothing
    questions = write_questions(tmp_path / "q.jsonl", categories=("stem",))
    argv = ["eval", "mt-bench", str(tiny_runs["dpo"]), "--questions", str(questions), "--judge", "openai:j"]
    argv += ["--judge-base-url", judge_server.url, "--max-new-tokens", "4", "--out", str(tmp_path / "ev")]
    assert main([*argv, "--reward-run", str(reward_run)]) == 0
    assert "| KL | reward |" in capsys.readouterr().out
    latest = {(s["model"], s["question_id"]): s for s in rows_of(tmp_path / "ev" / "kl.jsonl")}
    assert latest and all(s["reward_model"] == "reward" for s in latest.values())
    assert main([*argv, "--reward-run", str(tmp_path / "nope")]) == 2
    assert "not a finished reward run" in capsys.readouterr().err


def test_local_judge_prefill_starts_each_judgment(tmp_path):
    """A prefilled local judge's reply begins with the prefill (tokens fed after the generation
    prompt), its name says so (a separate cache), and an HTTP judge refuses a prefill."""
    from align.evals.judges import JudgeError, LocalJudge, make_judge

    judge = make_judge("hf:tiny-smollm2", max_new_tokens=3, prefill="Rating: [[")
    assert isinstance(judge, LocalJudge) and judge.name == "hf:tiny-smollm2 (prefill 'Rating: [[')"
    replies = judge.complete([("You judge.", "Rate this answer: 4."), ("You judge.", "Rate: blue.")])
    assert len(replies) == 2 and all(
        r.startswith("Rating: [[") and len(r) > len("Rating: [[") for r in replies
    )
    plain = LocalJudge("tiny-smollm2", max_new_tokens=3).complete([("You judge.", "Rate this answer: 4.")])
    assert not plain[0].startswith("Rating: [[")
    with pytest.raises(JudgeError, match="applies to hf:"):
        make_judge("openai:gpt", prefill="[[")
