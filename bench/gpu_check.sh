#!/usr/bin/env bash
# The GPU path, checked in one go on a CUDA machine (a copy of the checkout, the package not installed):
# the GPU tests, our model's speed against torchvision's there, then a time-boxed sweep of pretraining recipes.
#   OUT=/some/folder bash bench/gpu_check.sh
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 RESNET_ALLOW_DOWNLOAD=0
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
T0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, torchvision, PIL, numpy; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$OUT/env.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
{ timeout 60 python3 bench/inference_bench.py --device cuda --archs resnet18,resnet50 --batches 1,64 --repeats 12
  timeout 60 python3 bench/inference_bench.py --device cuda --bf16 --archs resnet18,resnet50 --batches 1,64 --repeats 12
} 2>&1 | tee "$OUT/inference.txt"
LEFT=$(( ${BUDGET:-540} - ($(date +%s) - T0) - 25 ))
echo "sweep deadline ${LEFT} s"
python3 bench/source_sweep.py --recipes @bench/sweep_recipes.json --seeds 0,1 --finetune-seeds 0,1 \
  --workers 8 --threads 2 --deadline "$LEFT" --out "$OUT/sweep.jsonl" 2>&1 | tail -40
echo "total $(( $(date +%s) - T0 )) s"
