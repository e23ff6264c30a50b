"""Mean with a percentile-bootstrap confidence interval: an `evaluate` metric shipped with align.

Loaded by path (`evaluate.load(".../mean_ci/mean_ci.py")`), so it works offline, unlike
`evaluate.load("<hub name>")`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Mean of `scores` and its bootstrap confidence interval (percentile method): the
scores are resampled with replacement `n_boot` times, and the interval spans the middle
`confidence` share of the resampled means."""

_KWARGS_DESCRIPTION = """
Args:
    scores: list of numbers (e.g. judge ratings 1-10, or 1/0.5/0 for win/tie/loss).
    confidence: interval coverage, default 0.95.
    n_boot: bootstrap resamples, default 2000.
    seed: resampling seed, default 0 (the interval is reproducible).
Returns:
    mean, low, high, n (low/high are NaN when there are no scores).
"""

_CITATION = """Efron, B. and Tibshirani, R. J. (1993). An Introduction to the Bootstrap."""


class MeanCi(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"scores": datasets.Value("float64")}),
        )

    def _compute(self, scores, confidence=0.95, n_boot=2000, seed=0):
        a = np.asarray(scores, dtype=np.float64)
        if a.size == 0:
            return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
        rng = np.random.default_rng(seed)
        means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
        tail = (1.0 - confidence) / 2
        low, high = np.quantile(means, [tail, 1.0 - tail])
        return {"mean": float(a.mean()), "low": float(low), "high": float(high), "n": int(a.size)}
