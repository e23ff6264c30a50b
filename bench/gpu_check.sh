#!/usr/bin/env bash
# The GPU check: everything CUDA-specific that CPU CI cannot see, sized for ONE device call of
# <= 9 minutes (each step has its own timeout; a step that runs out is reported, the rest go on).
#
# Here, once (fills the git-ignored .gpu/ with wheels, incl. liger-kernel, and the tokenizer):
#   make setup && EXTRA_WHEELS=liger-kernel bash ../shared/gpu/prepare.sh
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
step tests 120 "$py" -m pytest -q -x tests/test_precision.py tests/test_lora_fused.py \
  tests/test_logprobs.py tests/test_decode.py tests/parity
step dpo_135m 60 "$py" bench/dpo_vs_trl.py --device cuda --precision bf16 --steps 10 --warmup 3
if [ -d /tmp/big ]; then
  step dpo_1p7b 120 "$py" bench/dpo_vs_trl.py --device cuda --precision bf16 --model /tmp/big \
    --steps 6 --warmup 2
else
  echo "dpo_1p7b: not run (/tmp/big missing: source onbox.sh with BIG=1)" | tee -a "$summary"
fi
step rollout 45 "$py" bench/rollout_vs_generate.py --device cuda --batch-size 32 --max-new-tokens 64
step online 75 "$py" bench/online_vs_trl.py --methods grpo --steps 3 --warmup 1 --prompts-per-step 4 \
  --group-size 4 --max-new-tokens 64 --betas 0
# the headline lines of each bench (ratios from the same run), after the per-step status lines
for f in dpo_135m dpo_1p7b rollout online; do
  [ -f "$out/$f.log" ] && { echo "== $f"; grep -E "ratio|x TRL|tokens/s|MFU|peak|align|trl" "$out/$f.log" | tail -n 25; } >> "$summary"
done
cat "$summary"
