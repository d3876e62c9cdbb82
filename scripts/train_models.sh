#!/usr/bin/env bash
# Build the models of the fine-tuned evaluation rows. Each is reported only on the other set (the overlap guard
# refuses a model on its own training data):
#   models/e5-small-ft-korquad        ragpipe finetune embedding on KorQuAD 1.0 dev   -> dense-ft, hybrid-ft on KLUE
#   models/e5-small-reranker-korquad  ragpipe finetune reranker on KorQuAD 1.0 dev    -> hybrid-ft-rerank on KLUE
#                                     (from the fine-tuned encoder, negatives mined by hybrid-ft)
#   models/e5-small-ft-klue           ragpipe finetune embedding on the KLUE subset   -> dense-ft-klue, hybrid-ft-klue on KorQuAD
# The embedding trains a full epoch (161 steps: about 73 minutes on a 2-core CPU, 57 s on an H200). The reranker trains two
# epochs (1,574 steps: 207 s on an H200) where CUDA is present; on a CPU it stops at 120 steps (about 35 minutes) unless
# RR_STEPS says otherwise (-1: both epochs, about 8 hours). With CUDA (or LISTWISE=1) a listwise reranker is trained
# too (models/e5-small-reranker-korquad-listwise). docs/finetune.md has the curves.
# Runs on CUDA when present, else on the CPU (bf16 where it has it).
# Extra arguments go to every command.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${TRAIN:-../shared/data/korquad-v1/KorQuAD_v1.0_dev.json}
KLUE=${KLUE:-../shared/data/klue-mrc/klue_mrc_validation_subset.jsonl}
EMB=models/e5-small-ft-korquad
RR=models/e5-small-reranker-korquad
FIRST_STAGE=(--set "embedding.model=$EMB" --set embedding.backend=torch --set embedding.quantize=none)  # the first stage hybrid-ft runs
.venv/bin/ragpipe models prepare
if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then GPU=1; else GPU=0; fi
if [ "$GPU" = 1 ]; then RR_DEFAULT=-1; else RR_DEFAULT=120; fi
.venv/bin/ragpipe finetune embedding -c configs/default.yaml --train "$TRAIN" --out "$EMB" \
  --batch-size 32 --negatives 1 --lr 2e-5 --max-steps "${EMB_STEPS:--1}" --eval-steps 40 "$@"
.venv/bin/ragpipe finetune reranker -c configs/default.yaml "${FIRST_STAGE[@]}" --train "$TRAIN" --out "$RR" \
  --batch-size 32 --negatives 4 --lr 5e-5 --max-length 256 --epochs 2 --max-steps "${RR_STEPS:-$RR_DEFAULT}" --eval-steps 100 \
  --val-questions 200 "$@"
if [ "$GPU" = 1 ] || [ "${LISTWISE:-0}" = 1 ]; then
  .venv/bin/ragpipe finetune reranker -c configs/default.yaml "${FIRST_STAGE[@]}" --train "$TRAIN" --out "$RR-listwise" \
    --loss listwise --batch-size 16 --negatives 4 --lr 3e-5 --max-length 256 --epochs 2 --eval-steps 50 --val-questions 200 "$@"
fi
.venv/bin/ragpipe finetune embedding -c configs/default.yaml --train "$KLUE" --out models/e5-small-ft-klue \
  --batch-size 32 --negatives 1 --lr 2e-5 --eval-steps 10 "$@"
echo "evaluate on KorQuAD: .venv/bin/ragpipe evaluate -c configs/eval/korquad.yaml --setups dense,dense-ft-klue,hybrid,hybrid-ft-klue"
echo "evaluate on KLUE: .venv/bin/ragpipe evaluate -c configs/eval/klue.yaml --setups dense,dense-ft,hybrid,hybrid-ft,hybrid-ft-rerank,hybrid-ft-rerank-listwise"
