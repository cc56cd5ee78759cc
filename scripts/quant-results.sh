#!/usr/bin/env bash
# Regenerates results/quant: `ibn quant` (issue 17) on Gaussian and Student-t (ν = 3) inputs
# and on a trained model's activations: the residual stream after block 1 of a GPT-2-style
# byte-level decoder (width 64, LayerNorm, fortunes; experiments/cpu-text-gpt.ini's model and
# budget at its tuned rate, 0.01), the input of block 2's pre-LN normalizers. About 5 minutes on 2
# cores (the decoder trains in about 30 s if runs/quant-gpt is absent).
#
#   bash scripts/quant-results.sh            # -> results/quant/report.md
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
IBN_BUILD_TARGET=ibn_cli bash scripts/build.sh
if [ ! -f runs/quant-gpt/activations.h5 ]; then
  ./build/ibn train --data text:context=64:max_bytes=1000000 --model gpt:dim=64:depth=2:heads=4 --norm layernorm \
    --optimizer adamw --weight-decay 0.01 --lr 0.01 --schedule cosine --warmup-epochs 1 --epochs 6 \
    --steps-per-epoch 100 --batch 32 --eval-samples 1000 --dump-epochs list:6 --dump-samples subset:1000 \
    --checkpoint-every 0 --seed 0 --progress lines --out runs/quant-gpt
fi
./build/ibn quant --inputs gaussian,student-t:df=3,run:dir=runs/quant-gpt:layer=block1 --out runs/quant
# Written beside the old copy, then swapped in: a failure leaves the committed one whole.
trap 'rm -rf results/.quant.new' EXIT
rm -rf results/.quant.new
mkdir -p results/.quant.new
cp -r runs/quant/. results/.quant.new/
rm -f results/.quant.new/data/plot.log
rm -rf results/quant
mv results/.quant.new results/quant
echo "$root/results/quant/report.md"
