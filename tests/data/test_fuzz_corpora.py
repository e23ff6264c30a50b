"""Fuzzing the data path through the real CLI: generated corpora of every kind, good and bad rows mixed.

Each corpus goes through `align data inspect` and `align train` (on_bad_record error or skip),
in-process via `align.cli.main`. Asserted for every one: no exception escapes and nothing prints a
traceback; the exit code is 0 or 2; the counts match the generator's oracle (read, kept, skipped);
every reported place names the file, a 1-based line/record/row that really holds a bad record, a
known reason and, for reasons about a field, the field; data errors surface before the model
loads (load_model raises a sentinel: a clean corpus stops there).

Speed: the tokenizer is loaded once and its (23 ms) fingerprint memoised; ALIGN_CACHE is a
temporary directory (the embedded model is linked in), so ~/.cache/align does not fill up.
The number of corpora run is printed at the end (run with -s to see it).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fuzz_corpora import Corpus, csv_corpora, json_corpora, jsonl_corpora, parquet_corpora
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import align.data.inspect
import align.data.prepare
import align.models.load
import align.train
from align.cli import main
from align.models.load import load_tokenizer
from align.recipe import ModelConfig
from align.util.files import cache_dir

TINY = str(Path(__file__).resolve().parents[1] / "tiny.yaml")
MIN_CORPORA = 1000
RUNS = {"jsonl": 350, "json": 200, "csv": 250, "parquet": 200}
COUNTS: Counter = Counter()  # corpora run, by file kind
OUTCOMES: Counter = Counter()  # what `align train` did with them
NO_FIELD = {"invalid JSON", "invalid UTF-8", "not an object", "wrong number of cells", "unreadable record"}
UNIT = {".jsonl": "line", ".csv": "line", ".json": "record", ".parquet": "row"}


class ModelWouldLoad(BaseException):  # not an Exception: the CLI turns those into exit 1
    """Raised where the model would load: the data was accepted."""


class Runner:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.prepared: list = []
        self.n = 0

    def path(self, suffix: str) -> Path:
        self.n += 1
        return self.root / f"corpus{self.n}{suffix}"

    def cli(self, argv: list[str]) -> tuple[int | None, str, str]:
        """(exit code or None when the model would have loaded, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        self.prepared.clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | None = main(argv)
            except ModelWouldLoad:
                code = None
        assert "Traceback" not in out.getvalue() + err.getvalue()
        return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    tok = load_tokenizer(ModelConfig())
    real_fingerprint = align.data.prepare.tokenizer_fingerprint
    memo = real_fingerprint(tok)
    root = tmp_path_factory.mktemp("fuzz")
    (root / "cache").mkdir()
    (root / "cache" / "models").symlink_to(cache_dir() / "models", target_is_directory=True)

    def stop(*args: object, **kwargs: object) -> None:
        raise ModelWouldLoad

    run = Runner(root)
    real_prepare = align.train.prepare

    def recording_prepare(*args: object, **kwargs: object):
        run.prepared.append(real_prepare(*args, **kwargs))
        return run.prepared[-1]

    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGN_CACHE", str(root / "cache"))
        mp.setenv("ALIGN_LOG_LEVEL", "WARNING")
        mp.setattr(align.models.load, "load_tokenizer", lambda spec: tok)
        mp.setattr(align.train, "load_tokenizer", lambda spec: tok)
        mp.setattr(
            align.data.prepare, "tokenizer_fingerprint", lambda t: memo if t is tok else real_fingerprint(t)
        )
        mp.setattr(align.train, "load_model", stop)
        mp.setattr(align.models.load, "load_model", stop)
        mp.setattr(align.train, "prepare", recording_prepare)
        yield run
    total = sum(COUNTS.values())
    print(
        f"\nfuzz: {total} corpora ({dict(COUNTS)}) in {time.perf_counter() - t0:.1f} s; train: {dict(OUTCOMES)}",
        file=sys.__stderr__,
    )
    if set(COUNTS) == set(RUNS):  # the whole module ran
        assert total >= MIN_CORPORA


def check_place(line: str, corpus: Corpus) -> None:
    """`FILE: line N: field 'x': reason...` with N a bad position, a known reason, the field if any."""
    unit = UNIT[corpus.path.suffix]
    m = re.fullmatch(
        rf"\s*{re.escape(str(corpus.path))}: {unit} (\d+): (?:field '(.*?)': )?([^:]+)(?::.*)?", line
    )
    assert m, line
    assert int(m[1]) in corpus.bad, (line, corpus.bad)
    assert m[2] is not None or m[3] in NO_FIELD, line


def file_error(code: int | None, err: str, corpus: Corpus) -> None:
    assert code == 2, err
    (line,) = [x for x in err.splitlines() if x.startswith("align: error:")]
    assert line.startswith(f"align: error: {corpus.path}: "), line


def check_inspect(run: Runner, corpus: Corpus, mode: str) -> None:
    code, out, err = run.cli(
        # overrides before --recipe: argparse does not take positionals after an option here
        ["data", "inspect", str(corpus.path), f"data.on_bad_record={mode}", "--recipe", TINY]
    )
    if corpus.file_error:
        return file_error(code, err, corpus)
    assert code == 0, err
    m = re.search(r"^records: read (\d+), kept (\d+), skipped (\d+)", out, re.M)
    assert m and (int(m[1]), int(m[2]), int(m[3])) == (corpus.rows, corpus.good, len(corpus.bad)), (
        out,
        corpus,
    )
    places = [x for x in out.splitlines() if x.startswith(f"    {corpus.path}: ")]
    assert bool(places) == bool(corpus.bad), out
    for place in places:
        check_place(place, corpus)


def check_train(run: Runner, corpus: Corpus, mode: str) -> None:
    argv = ["train", TINY, "data.card=", f"data.path={corpus.path}", f"output_dir={run.root / 'run'}"]
    code, _, err = run.cli([*argv, f"data.on_bad_record={mode}"])
    OUTCOMES[
        "unreadable file"
        if corpus.file_error
        else f"stopped on bad records ({mode})"
        if code == 2 and corpus.bad and mode == "error"
        else "no examples left"
        if code == 2
        else f"data accepted ({mode}, {'with' if corpus.bad else 'no'} bad records)"
    ] += 1
    if corpus.file_error:
        return file_error(code, err, corpus)
    if mode == "error" and corpus.bad:
        n = len(corpus.bad)
        assert code == 2, err
        head = f"align: error: {corpus.path}: {n} bad record{'s' if n > 1 else ''} of {corpus.rows} ("
        assert err.splitlines()[-1 - min(n, 5) - (n > 5)].startswith(head), err
        places = [x for x in err.splitlines() if x.startswith(f"  {corpus.path}: ")]
        assert len(places) == min(n, 5), err
        for place in places:
            check_place(place, corpus)
        assert (f"  … and {n - 5} more" in err) is (n > 5)
    elif not corpus.good:
        file_error(code, err, corpus)
        assert "no training examples left" in err
    else:  # the data was accepted: the model would load now, unless too few examples fill one step
        (prepared,) = run.prepared
        if code is not None:  # tests/tiny.yaml: one optimizer step is 4 examples
            assert code == 2 and "do not fill one optimizer step" in err and len(prepared.train) < 4, err
        stats = prepared.load_stats
        assert (stats["read"], stats["kept"], sum(stats["skipped"].values())) == (
            corpus.rows,
            corpus.good,
            len(corpus.bad),
        )


def fuzz(kind: str, corpora: Callable[[Path], st.SearchStrategy[Corpus]]):
    """One hypothesis test per file kind: every corpus through inspect and train."""

    @settings(
        max_examples=RUNS[kind],
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data(), mode=st.sampled_from(["error", "skip"]))
    def test(runner: Runner, data: st.DataObject, mode: str) -> None:
        corpus = data.draw(corpora(runner.path(f".{kind}")))
        COUNTS[kind] += 1
        check_inspect(runner, corpus, mode)
        check_train(runner, corpus, mode)

    return test


test_fuzz_jsonl = fuzz("jsonl", jsonl_corpora)
test_fuzz_json = fuzz("json", json_corpora)
test_fuzz_csv = fuzz("csv", csv_corpora)
test_fuzz_parquet = fuzz("parquet", parquet_corpora)
