#!/usr/bin/env bash
# The GPU check: everything CUDA-specific that CPU CI cannot see, sized for ONE device call of
# <= 9 minutes (each step has its own timeout; a step that runs out is reported, the rest go on).
#
# Here, once (fills the git-ignored .gpu/ with wheels, incl. liger-kernel, and the tokenizer):
#   make setup && EXTRA_WHEELS="liger-kernel hjson msgpack ninja py-cpuinfo einops" bash ../shared/gpu/prepare.sh
#   .venv/bin/pip wheel -q --no-deps deepspeed==0.19.8 -w .gpu/whl   # sdist only on PyPI: a pure-Python wheel
# On the GPU box (the device tool: carry .gpu), from the project root, in one call:
#   BIG=1 . .gpu/onbox.sh && bash bench/gpu_check.sh
# Results go to $OUT/gpu_check/ (or /tmp/gpu_check): one log per step and summary.txt.
# Weights are random with the real shapes (onbox.sh): speed, memory and "runs on CUDA", not quality.
set -u
out="${OUT:-/tmp}/gpu_check"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
py=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log it, one summary line
  local name=$1 secs=$2
  shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$secs" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local what=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && what="TIMED OUT after ${secs} s"
  [ $rc -ne 0 ] && [ "$what" = ok ] && what="FAILED rc=$rc"
  echo "$name: $what ($((SECONDS - t0)) s)" | tee -a "$summary"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1 || true
cat "$out/gpu.txt" >> "$summary"
# CUDA paths of the suite: precision (bf16 autocast, the fp16 scaler), fused LoRA, packed log-probs,
# the fast rollout's exactness, TRL parity.
step tests 110 "$py" -m pytest -q -x tests/test_precision.py tests/test_lora_fused.py \
  tests/test_logprobs.py tests/test_decode.py tests/parity
step dpo_135m 60 "$py" bench/dpo_vs_trl.py --device cuda --precision bf16 --steps 10 --warmup 3
if [ -d /tmp/big ]; then
  step dpo_1p7b 110 "$py" bench/dpo_vs_trl.py --device cuda --precision bf16 --model /tmp/big \
    --steps 6 --warmup 2
else
  echo "dpo_1p7b: not run (/tmp/big missing: source onbox.sh with BIG=1)" | tee -a "$summary"
fi
step rollout 40 "$py" bench/rollout_vs_generate.py --device cuda --batch-size 32 --max-new-tokens 64
step online 70 "$py" bench/online_vs_trl.py --methods grpo --steps 3 --warmup 1 --prompts-per-step 4 \
  --group-size 4 --max-new-tokens 64 --betas 0
# DeepSpeed ZeRO-3 on one GPU in bf16 (NCCL, DeepSpeed's bf16 overflow check, gathered saves)
if "$py" -c "import deepspeed" 2> /dev/null; then
  step zero3_bf16 30 "$py" -m accelerate.commands.launch --config_file recipes/accelerate/zero3.yaml \
    --num_processes 1 -m align train tests/tiny.yaml precision=bf16 train.max_steps=3 \
    output_dir="$out/zero3_run"
else
  echo "zero3_bf16: not run (deepspeed not installed: see the wheel line at the top)" | tee -a "$summary"
fi
# the headline lines of each bench (ratios from the same run), after the per-step status lines
for f in dpo_135m dpo_1p7b rollout online; do
  [ -f "$out/$f.log" ] && { echo "== $f"; grep -E "ratio|x TRL|tokens/s|MFU|peak|align|trl" "$out/$f.log" | tail -n 25; } >> "$summary"
done
cat "$summary"
