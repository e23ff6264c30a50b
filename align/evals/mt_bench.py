"""`align eval mt-bench RUN_DIR [RUN_DIR ...]`: answers, judgments, scores for several runs and
their base model (the baseline), in one eval directory that sweeps and push read.

    OUT/config.json          questions fingerprint, answer settings, models (label -> identity)
    OUT/answers.jsonl        (model, question_id, turn) -> answer        } appended as made:
    OUT/judgments.jsonl      (judge, model, question_id, turn) -> rating } a rerun resumes
    OUT/kl.jsonl             (model, question_id) -> KL sample (and reward, when scored)
    OUT/scores.{jsonl,csv,md}  one row per model: overall, turn 1, turn 2, categories, 95% CIs
    OUT/results.json         evaluate.save: the rows, settings and versions
    OUT/pairwise_judgments.jsonl, OUT/pairwise.{jsonl,csv,md}   with --pairwise (two runs)

An eval directory keeps answering the same questions with the same settings: a rerun with other
questions or settings is refused (use another --out), and a label whose adapter changed is
refused rather than mixing answers of two models.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from align.evals import answers as ans
from align.evals import frontier, judging, ratings, report, stats
from align.evals.judges import DEFAULT_KEY_ENV, Judge, make_judge
from align.evals.policies import ModelRef, baseline_of, describe_run, load, unique_labels
from align.evals.questions import DEFAULT_QUESTIONS, NEED_REFERENCE, Question, fingerprint, load_questions
from align.evals.store import JsonlStore
from align.util.errors import AlignError
from align.util.files import dumps_json, write_text_atomic

log = logging.getLogger("align.evals")

JUDGMENT_KEY = ("judge", "model", "question_id", "turn")


class EvalDirError(AlignError):
    """The eval directory holds results that the new eval would contradict."""


@dataclass
class EvalConfig:
    judge: str
    questions: str | None = None  # None: the shipped question set
    references: str | None = None  # FastChat reference answers (math, reasoning, coding)
    judge_base_url: str | None = None
    judge_key_env: str = DEFAULT_KEY_ENV
    judge_workers: int = 4
    judge_timeout: float = 120.0
    judge_retries: int = 5
    judge_backoff: float = 2.0
    judge_max_new_tokens: int | None = None  # judgment length; None: 512 local (hf:), 2048 served
    judge_token_param: str = "auto"  # served judges: max_tokens | max_completion_tokens | auto
    judge_prefill: str | None = None  # local judges: the start of each judgment, e.g. "Rating: [["
    greedy: bool = False
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 0
    baseline: bool = True
    kl: bool = True
    pairwise: bool = False

    def answer_settings(self) -> ans.AnswerSettings:
        return ans.AnswerSettings(self.greedy, self.max_new_tokens, self.batch_size, self.seed)

    def make_judge(self) -> Judge:
        return make_judge(
            self.judge,
            base_url=self.judge_base_url,
            key_env=self.judge_key_env,
            max_new_tokens=self.judge_max_new_tokens,
            prefill=self.judge_prefill,
            timeout=self.judge_timeout,
            max_retries=self.judge_retries,
            backoff=self.judge_backoff,
            workers=self.judge_workers,
            token_param=self.judge_token_param,
        )


@dataclass
class EvalResult:
    out: Path
    judge: str
    rows: list[dict[str, Any]]
    markdown: str
    frontier: dict[str, dict[str, Any]]
    models: list[ModelRef]
    counts: dict[str, int] = field(default_factory=dict)  # what this call computed (not cached)
    pairwise: dict[str, Any] | None = None


def models_of(run_dirs: list[str | Path], baseline: bool) -> list[ModelRef]:
    """The runs (unique labels) and, once per distinct base, the base model alone."""
    runs = unique_labels([describe_run(d) for d in run_dirs])
    bases: dict[str, ModelRef] = {}
    for r in runs if baseline else []:
        b = baseline_of(r)
        bases.setdefault(b.label, b)
    return [*runs, *bases.values()]


def check_eval_dir(
    out: Path, questions: list[Question], source: str, cfg: EvalConfig, models: list[ModelRef]
) -> None:
    """Write config.json, or check the new eval agrees with what `out` already holds."""
    path = out / "config.json"
    new = {
        "align_eval": 1,
        "questions": {"source": source, "fingerprint": fingerprint(questions), "count": len(questions)},
        "answers": cfg.answer_settings().cache_key(),
        "models": {m.label: m.identity() for m in models},
    }
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise EvalDirError(f"{path}: unreadable ({e}); use another --out") from None
        if old["questions"]["fingerprint"] != new["questions"]["fingerprint"]:
            raise EvalDirError(
                f"{out} holds answers to other questions ({old['questions']['source']}); use another --out"
            )
        for key, value in new["answers"].items():
            if old["answers"].get(key) != value:
                raise EvalDirError(
                    f"{out} was answered with {key}={old['answers'].get(key)!r}, not {value!r}; "
                    "use the same setting or another --out"
                )
        for label, ident in new["models"].items():
            if label in old["models"] and old["models"][label] != ident:
                raise EvalDirError(
                    f"{out}: model {label!r} was answered by different weights ({old['models'][label]} vs "
                    f"{ident}); use another --out or rename the run directory"
                )
        new["models"] = {**old["models"], **new["models"]}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, dumps_json(new, indent=1))


def _release(loaded) -> None:
    del loaded
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def produce(
    models: list[ModelRef], questions: list[Question], out: Path, cfg: EvalConfig, want_samples: bool
) -> dict[str, int]:
    """Answers (and KL samples) each model still lacks; one model in memory at a time."""
    settings = cfg.answer_settings()
    store = JsonlStore(out / "answers.jsonl", ans.ANSWER_KEY)
    kl_store = JsonlStore(out / "kl.jsonl", frontier.KL_KEY)
    counts = {"answers_generated": 0, "kl_samples": 0}
    for ref in models:
        need_answers = bool(ans.missing(ref, questions, store))
        need_kl = cfg.kl and bool(frontier.missing_kl(ref, questions, kl_store, want_samples))
        if not (need_answers or need_kl):
            continue
        model_needed = need_answers or not ref.is_baseline or want_samples
        loaded = load(ref) if model_needed else None
        counts["answers_generated"] += ans.answer_questions(ref, questions, store, settings, loaded)
        if need_kl:
            counts["kl_samples"] += frontier.measure_kl(
                ref, loaded, questions, kl_store, settings, want_samples
            )
        _release(loaded)
    return counts


def judge_single(
    judge: Judge, models: list[ModelRef], questions: list[Question], out: Path, counts: judging.JudgeCounts
) -> JsonlStore:
    store = JsonlStore(out / "judgments.jsonl", JUDGMENT_KEY)
    answers = JsonlStore(out / "answers.jsonl", ans.ANSWER_KEY)
    prompts = ratings.load_judge_prompts()
    items = []
    for m in models:
        for q in questions:
            texts = ans.answer_texts(answers, m.label, q)
            for turn in range(1, len(q.turns) + 1):
                seen = judging.answers_hash(*texts[:turn])
                done = store.get((judge.name, m.label, q.question_id, turn))
                if done is not None and done.get("answers_sha") == seen:
                    continue
                name, request = ratings.single_request(prompts, q, turn, texts)
                record = {"judge": judge.name, "model": m.label, "question_id": q.question_id, "turn": turn}
                context = {"category": q.category, "prompt": name, "answers_sha": seen}
                items.append(judging.Item({**record, **context}, request))
    judging.judge_items(judge, items, ratings.parse_rating, "rating", store, counts)
    return store


def evaluate_runs(
    run_dirs: list[str | Path],
    out: str | Path,
    cfg: EvalConfig,
    reward_fn: frontier.RewardFn | None = None,
    reward_name: str = "reward",
) -> EvalResult:
    """Answer, judge and score `run_dirs` (+ baselines) into `out`; cached work is reused.
    `reward_fn(prompts, responses) -> scores` adds the reward column of the frontier."""
    out = Path(out)
    questions = load_questions(cfg.questions, cfg.references)
    unguided = [q.question_id for q in questions if q.category in NEED_REFERENCE and not q.reference]
    if unguided:
        log.warning(
            "%d %s questions have no reference answer and are judged with the general prompt: %s "
            "(pass --references FILE)",
            len(unguided),
            "/".join(sorted(NEED_REFERENCE - {"arena-hard-200"})),
            ", ".join(map(str, unguided[:10])),
        )
    models = models_of(run_dirs, cfg.baseline)
    check_eval_dir(out, questions, str(cfg.questions or DEFAULT_QUESTIONS), cfg, models)
    want_samples = reward_fn is not None
    counts = produce(models, questions, out, cfg, want_samples)

    judge = cfg.make_judge()
    jc = judging.JudgeCounts()
    store = judge_single(judge, models, questions, out, jc)
    counts.update(judge_requests=jc.requests, judged=jc.judged, unparsable_new=jc.unparsable)
    labels = [m.label for m in models]
    by_model, failed = stats.ratings_by_model(store.values(), judge.name)
    categories = {q.question_id: q.category for q in questions}
    ids = {(q.question_id, t) for q in questions for t in range(1, len(q.turns) + 1)}
    by_model = {m: {k: v for k, v in r.items() if k in ids} for m, r in by_model.items()}
    rows = stats.score_rows(labels, by_model, failed, categories)

    kl_store = JsonlStore(out / "kl.jsonl", frontier.KL_KEY)
    if reward_fn is not None:
        counts["rewards_scored"] = frontier.add_rewards(
            kl_store, questions, reward_fn, reward_name, cfg.batch_size
        )
    front = frontier.frontier_rows(kl_store, labels, questions) if cfg.kl else {}
    for r in rows:
        r["frontier"] = front.get(r["model"])
    markdown = report.scores_markdown(rows, judge.name)
    flat = [
        report.score_flat(
            r,
            {
                **report.flat_ci("kl", (front.get(r["model"]) or {}).get("kl")),
                **report.flat_ci("reward", (front.get(r["model"]) or {}).get("reward")),
            },
        )
        for r in rows
    ]
    report.write_tables(out, "scores", rows, flat, markdown)
    result = EvalResult(out, judge.name, rows, markdown, front, models, counts)
    if cfg.pairwise:
        from align.evals.pairwise import evaluate_pair

        result.pairwise = evaluate_pair(judge, models, questions, out, jc)
        counts["judge_requests"] = jc.requests
    stats.save_results(
        out / "results.json",
        judge=judge.name,
        questions=str(cfg.questions or DEFAULT_QUESTIONS),
        settings=asdict(cfg),
        rows=rows,
        pairwise=result.pairwise,
    )
    return result
