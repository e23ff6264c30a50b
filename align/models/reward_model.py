"""Reward models: a LoRA adapter + scalar head on the shared base, or a separate local model.

The score of a sequence is read at its last real token (from the attention mask: with SmolLM2,
pad = eos = `<|im_end|>`, so a rule like "last token that is not pad" would read the token
*before* the final EOS, or a prompt token). A reward run directory (`method: reward`) holds the
adapter (`adapter/`, stock PEFT files) and the head (`adapter/score_head.safetensors`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from align import rewards
from align.data.packing import pack_rollout_rows
from align.models.adapters import HEAD_FILE, REWARD, ScalarHead, load_full_state, use_adapter
from align.models.logprobs import attn_implementation, causal_lm, decoder_layer_classes, packed_hidden
from align.models.rollout import Rollout
from align.util.errors import RecipeError
from align.util.run_recipe import RECIPE_FILE, read_run_recipe


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden[i, last real position of row i] for any padding side (no device sync)."""
    t = attention_mask.shape[1]
    idx = (torch.arange(t, device=attention_mask.device)[None] * attention_mask.long()).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def backbone_hidden(model: nn.Module, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """Last hidden states of the decoder (no LM head) of a (PEFT) causal LM."""
    lm = causal_lm(model)
    out = lm.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    return out.last_hidden_state


def rows_hidden(
    model: nn.Module,
    ids: torch.Tensor,
    att: torch.Tensor,
    pos: torch.Tensor,
    pack: bool,
    attn: str,
    prompt_width: int | None = None,
) -> torch.Tensor:
    """The decoder's last hidden states [N, T, H] of rollout rows: a prompt left-padded to
    `prompt_width` columns, then its right-padded response. `pack` (and a `prompt_width`): the rows
    run packed (`pack_rollout_rows`) under the block mask, each distinct prompt once with its
    responses after it, and come back in the padded layout, so callers index them as before.

    Packed rows are no longer than the longest segment: longer ones would compute more attention
    than the padded rows (a CPU attention under a mask computes every pair of a row: rows of 512
    made a GRPO micro-batch's update 1.5x slower than padding), shorter ones could not hold it."""
    if not pack or prompt_width is None:
        return backbone_hidden(model, ids, att, pos)
    a = att.detach().to("cpu", torch.bool)
    n, width = a.shape
    lens, first = a.sum(1), a.int().argmax(1)
    last = width - 1 - a.flip(1).int().argmax(1)
    rlen = lens - (prompt_width - first)
    if (
        bool(((last - first + 1) != lens).any())
        or bool((first >= prompt_width).any())
        or bool((rlen < 0).any())
    ):
        raise ValueError(
            f"rows_hidden: each row must be a non-empty prompt ending at column {prompt_width}, then its response"
        )
    host = ids.detach().cpu()
    keys: dict[tuple, int] = {}
    group = [
        keys.setdefault(tuple(host[i, int(first[i]) : prompt_width].tolist()), len(keys)) for i in range(n)
    ]
    spans = pack_rollout_rows(first.tolist(), rlen.tolist(), group, prompt_width, width)
    p = {k: v.to(ids.device) for k, v in spans.items()}
    packed = {
        "ids": ids.flatten()[p["src"]],
        "pos": pos.flatten()[p["src"]],
        "segment": p["segment"],
        "branch": p["branch"],
    }
    return packed_hidden(causal_lm(model), packed, attn)[p["back"]].view(n, width, -1)


class RewardScorer(nn.Module):
    """Scores sequences: the (PEFT) model with adapter `adapter` active (None: as it is), head at
    the last real token. An nn.Module so Accelerate can wrap it for reward-model training.

    `layout` "packed" scores a batch of pairs from its packed rows (each prompt once, both replies
    after it: align/data/packing.py) when the batch has them; otherwise rows are scored as given."""

    def __init__(
        self,
        model: nn.Module,
        head: ScalarHead,
        adapter: str | None = None,
        layout: str = "padded",
        pack: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.head, self.adapter, self.layout = model, head, adapter, layout
        self.pack = pack  # rows given as padded rows run packed (rows_hidden)
        self.attn = attn_implementation(model)

    @property
    def _no_split_modules(self) -> list[str] | None:  # FSDP: one unit per decoder layer
        return decoder_layer_classes(self.model)

    @classmethod
    def fresh(cls, peft_model: nn.Module, seed: int, layout: str = "padded") -> RewardScorer:
        hidden = causal_lm(peft_model).config.hidden_size
        head = ScalarHead(hidden, seed).to(next(peft_model.parameters()).device)
        return cls(peft_model, head, layout=layout)

    def forward(
        self, input_ids, attention_mask, position_ids=None, packed=None, prompt_width=None, **_
    ) -> torch.Tensor:
        role = use_adapter(self.model, self.adapter) if self.adapter else contextlib.nullcontext()
        with role:
            if packed is not None and self.layout == "packed":
                hidden = packed_hidden(causal_lm(self.model), packed, self.attn)
                return self.head(hidden.index_select(0, packed["last"]))
            hidden = rows_hidden(
                self.model, input_ids, attention_mask, position_ids, self.pack, self.attn, prompt_width
            )
        return self.head(last_token(hidden, attention_mask))

    # what checkpoints and the final save need beyond the PEFT adapter
    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v for k, v in self.head.state_dict().items()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_full_state(self.head, {k[5:]: v for k, v in tensors.items() if k.startswith("head.")})

    def save_files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {HEAD_FILE: dict(self.head.state_dict())}


def read_reward_run(run_dir: str | Path, where: str, key: str | None = "ppo.reward_run") -> tuple[Path, dict]:
    """(adapter directory, the run's recipe) of a finished `method: reward` run, or a RecipeError
    that says what is missing or unreadable; `key` names the recipe key that gave it (None: `where`
    does)."""
    where = f"{where}: {key}" if key else where
    root = Path(run_dir).expanduser()
    adapter = root / "adapter"
    missing = [
        p.name
        for p in (root / RECIPE_FILE, adapter / "adapter_config.json", adapter / HEAD_FILE)
        if not p.exists()
    ]
    if not root.is_dir() or missing:
        raise RecipeError(
            f"{where}: {root} is not a finished reward run"
            + (f" (missing {', '.join(missing)})" if root.is_dir() else " (no such directory)")
            + "; train one with `align train recipes/smollm2/reward.yaml`"
        )
    recipe = read_run_recipe(root, RecipeError, where)
    if recipe.get("method") != "reward":
        raise RecipeError(f"{where}: {root} is a '{recipe.get('method')}' run, not a reward model run")
    return adapter, recipe


def check_same_base(
    reward_recipe: dict,
    base_name: str,
    where: str,
    run_dir: str,
    section: str = "ppo",
    adapter: str | None = None,
    seed: int = 0,
) -> None:
    """A reward adapter only means something on the base it was trained on: the same model, and
    the same earlier adapters merged into it (`model.adapter`, compared by content)."""
    from align.models.earlier_run import resolve_chain

    model = reward_recipe.get("model") or {}
    theirs = model.get("name")
    if theirs != base_name:
        raise RecipeError(
            f"{where}: {section}.reward_run: {run_dir} was trained on base model {theirs!r}, this run uses "
            f"{base_name!r}; a reward adapter works only on its own base (use {section}.reward_model for a "
            "separate model)"
        )
    key = f"{where}: {section}.reward_run"
    theirs_chain = resolve_chain(
        base_name, model.get("revision"), reward_recipe.get("seed", 0), model.get("adapter"), key
    )
    ours = resolve_chain(base_name, model.get("revision"), seed, adapter, where)
    if [link.sha256 for link in theirs_chain] != [link.sha256 for link in ours]:
        raise RecipeError(
            f"{key}: {run_dir} was trained on {base_name!r} started from {model.get('adapter') or 'nothing'} "
            f"(model.adapter), this run starts from {adapter or 'nothing'}: its adapter sits on the shared "
            f"base, so both must start from the same run (or use {section}.reward_model for a separate model)"
        )


class ExternalRewardModel:
    """A local sequence-classification model with its own tokenizer: responses are decoded by the
    caller and re-encoded here (through its chat template when it has one)."""

    def __init__(self, path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise RecipeError(f"ppo.reward_model: {folder} holds no config.json (a local model directory)")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=dtype, use_safetensors=True
        ).to(device)
        self.model.eval()
        if getattr(self.model.config, "num_labels", 1) != 1:
            raise RecipeError(
                f"ppo.reward_model: {folder} has num_labels={self.model.config.num_labels}; a reward model "
                "gives one score (num_labels 1)"
            )
        self.tok = AutoTokenizer.from_pretrained(folder)
        if self.tok.pad_token is None:  # masks come from the attention mask, so any id will do
            self.tok.pad_token = self.tok.eos_token
        self.head = next(
            (getattr(self.model, n) for n in ("score", "classifier") if hasattr(self.model, n)), None
        )
        if self.head is None:
            raise RecipeError(f"ppo.reward_model: {folder}: no `score` or `classifier` head found")
        self.device = device

    @torch.no_grad()
    def __call__(self, conversations: list[list[dict[str, str]]]) -> torch.Tensor:
        """Scores [N] of prompt+response conversations (chat messages)."""
        if getattr(self.tok, "chat_template", None):
            texts = [self.tok.apply_chat_template(c, tokenize=False) for c in conversations]
        else:
            texts = ["\n".join(m["content"] for m in c) for c in conversations]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        hidden = self.model.base_model(**enc, use_cache=False).last_hidden_state
        return self.head(last_token(hidden, enc["attention_mask"])).float().squeeze(-1)


def _run_scorer(run_dir: str | Path, device: str):
    """(RewardScorer of a reward run on its own base, fp32, eval mode; its tokenizer)."""
    from dataclasses import fields

    from peft import PeftModel

    from align.models.load import load_model, load_tokenizer
    from align.recipe import ModelConfig

    adapter_dir, recipe = read_reward_run(run_dir, "--reward-run", key=None)
    known = {f.name for f in fields(ModelConfig)}
    spec = ModelConfig(**{k: v for k, v in (recipe.get("model") or {}).items() if k in known})
    spec.dtype = "float32"
    tok = load_tokenizer(spec)
    model = PeftModel.from_pretrained(load_model(spec, seed=recipe.get("seed", 0)), str(adapter_dir)).to(
        device
    )
    return RewardScorer(model, ScalarHead.load(adapter_dir / HEAD_FILE).to(device)).eval(), tok


def reward_ids_function(run_dir: str | Path, device: str = "cpu", batch_size: int = 8):
    """`score(prompt_ids, response_ids) -> list[float]` from a reward run: each row scored as the
    token sequence prompt + response exactly as given (a sampled response that ended carries its
    EOS), at its last real token, as the sampling methods score their rollouts."""
    from align.data.batches import pad_sequences

    scorer, tok = _run_scorer(run_dir, device)

    @torch.no_grad()
    def score(prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        out: list[float] = []
        for s in range(0, len(prompt_ids), batch_size):
            b = pad_sequences(
                prompt_ids[s : s + batch_size], response_ids[s : s + batch_size], tok.pad_token_id
            )
            out += scorer(b.input_ids.to(device), b.attention_mask.to(device)).float().cpu().tolist()
        return out

    score.tokenizer = tok
    return score


def reward_function(run_dir: str | Path, device: str = "cpu", batch_size: int = 8):
    """`score(prompts, responses) -> list[float]` from a reward run, for evals: each prompt as one
    user turn through the base's chat template, each response as the assistant's reply ending in
    EOS, exactly the sequences the reward model was trained on and PPO scores."""
    score_ids = reward_ids_function(run_dir, device, batch_size)
    tok = score_ids.tokenizer

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        chats = [
            list(
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, return_dict=True
                )["input_ids"]
            )
            for p in prompts
        ]
        replies = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in responses]
        return score_ids(chats, replies)

    return score


class RewardSource:
    """The score of each response: the reward adapter + head, a local model, or a function."""

    def __init__(self, peft_model, reward_head, cfg, tokenizer, device, pack: bool = False) -> None:
        self.tok, self.cfg = tokenizer, cfg
        self.scorer = self.external = self.fn = None
        if reward_head is not None:
            self.scorer = RewardScorer(
                peft_model, reward_head.to(device).requires_grad_(False), adapter=REWARD, pack=pack
            )
        elif cfg.reward_model:
            self.external = ExternalRewardModel(cfg.reward_model, device)
        else:
            self.fn = rewards.resolve(cfg.reward_function)

    def texts(self, rollout: Rollout) -> tuple[list[str], list[str], list[list[int]]]:
        lens = rollout.response_len.tolist()
        plens = rollout.prompt_len.tolist()
        resp_ids = [row[:n] for row, n in zip(rollout.response_ids.tolist(), lens)]
        prompts = [
            self.tok.decode(row[len(row) - n :], skip_special_tokens=True)
            for row, n in zip(rollout.prompt_ids.tolist(), plens)
        ]
        responses = [self.tok.decode(ids, skip_special_tokens=True) for ids in resp_ids]
        return prompts, responses, resp_ids

    def __call__(
        self, rollout: Rollout, ids, att, pos, answers: Sequence[str | None] | None = None
    ) -> torch.Tensor:
        """Scores [N]; `answers` (each row's prompt record's answer) reach a reward function that
        asks for them, and are ignored by reward models."""
        if self.scorer is not None:
            return self.scorer(ids, att, pos, prompt_width=rollout.prompt_ids.shape[1]).float()
        prompts, responses, resp_ids = self.texts(rollout)
        if self.external is not None:
            convs = [
                [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
                for p, a in zip(prompts, responses)
            ]
            return self.external(convs).to(ids.device)
        return torch.tensor(rewards.call(self.fn, prompts, responses, resp_ids, answers), device=ids.device)
