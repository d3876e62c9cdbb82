#!/usr/bin/env bash
# Build the models of the dense-ft / hybrid-ft / hybrid-ft-rerank evaluation rows, trained on KorQuAD 1.0 dev only
# (the rows are reported on KLUE MRC; never on KorQuAD, which the overlap guard refuses):
#   models/e5-small-ft-korquad        ragpipe finetune embedding (from the prepared e5-small, BM25-mined negatives)
#   models/e5-small-reranker-korquad  ragpipe finetune reranker (from the fine-tuned encoder, negatives mined by hybrid-ft)
# The step caps are what a 2-core CPU finishes in about an hour (docs/finetune.md has the curves); on a GPU,
# EMB_STEPS=-1 RR_STEPS=-1 trains a full epoch each. Runs on CUDA when present, else on the CPU (bf16 where it has it).
# Extra arguments go to both commands.
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${TRAIN:-../shared/data/korquad-v1/KorQuAD_v1.0_dev.json}
EMB=models/e5-small-ft-korquad
RR=models/e5-small-reranker-korquad
.venv/bin/ragpipe models prepare
.venv/bin/ragpipe finetune embedding -c configs/default.yaml --train "$TRAIN" --out "$EMB" \
  --batch-size 32 --negatives 1 --lr 2e-5 --max-steps "${EMB_STEPS:-60}" --eval-steps 20 "$@"
.venv/bin/ragpipe finetune reranker -c configs/default.yaml --set "embedding.model=$EMB" --train "$TRAIN" --out "$RR" \
  --batch-size 32 --negatives 4 --lr 5e-5 --max-length 256 --max-steps "${RR_STEPS:-120}" --eval-steps 40 --val-questions 100 "$@"
echo "evaluate on KLUE: .venv/bin/ragpipe evaluate -c configs/eval/klue.yaml --setups dense,dense-ft,hybrid,hybrid-ft,hybrid-ft-rerank"
