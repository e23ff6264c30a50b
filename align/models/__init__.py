"""Models: loading (hub id, local dir, the embedded default, the tiny test model), LoRA adapters
and scalar heads, fused LoRA, the log-prob paths, the reference, reward models and the rollout
sampler. Imports the recipe's types, the data layer's batches, objectives' types and util."""
