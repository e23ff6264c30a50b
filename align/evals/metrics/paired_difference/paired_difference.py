"""Mean paired difference with a percentile-bootstrap confidence interval (an `evaluate` metric
shipped with align, loaded by path so it works offline).

Used to say whether two models' scores on the same items differ beyond the noise: the interval
of `mean(scores - baseline)` over resampled items either contains 0 (inside the noise) or not.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Mean of `scores - baseline` over paired items, with a bootstrap interval that
resamples the items (pairs stay together), so item difficulty cancels out."""

_KWARGS_DESCRIPTION = """
Args:
    scores: list of numbers, one per item.
    baseline: list of numbers for the same items, in the same order.
    confidence: interval coverage, default 0.95.
    n_boot: bootstrap resamples, default 2000.
    seed: resampling seed, default 0.
Returns:
    mean_diff, low, high, n, inside_noise (the interval contains 0).
"""

_CITATION = """Efron, B. and Tibshirani, R. J. (1993). An Introduction to the Bootstrap."""


class PairedDifference(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"scores": datasets.Value("float64"), "baseline": datasets.Value("float64")}
            ),
        )

    def _compute(self, scores, baseline, confidence=0.95, n_boot=2000, seed=0):
        d = np.asarray(scores, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
        if d.size == 0:
            nan = float("nan")
            return {"mean_diff": nan, "low": nan, "high": nan, "n": 0, "inside_noise": True}
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
        tail = (1.0 - confidence) / 2
        low, high = (float(x) for x in np.quantile(means, [tail, 1.0 - tail]))
        return {
            "mean_diff": float(d.mean()),
            "low": low,
            "high": high,
            "n": int(d.size),
            "inside_noise": bool(low <= 0.0 <= high),
        }
