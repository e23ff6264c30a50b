"""MT-Bench-style evaluation of run directories and beta/method sweeps.

Evals only read run directories (recipe.yaml, adapter/, manifest.json, summary.json); they never
import the training loop. Everything an eval computes (answers, judgments, KL samples) is cached
in its eval directory, keyed, so an interrupted eval resumes where it stopped.
"""
