#!/usr/bin/env bash
# Builds benchmarks/.venv-gradcam: pytorch-grad-cam (package `grad-cam`) beside MONAI, for the
# side-by-side benchmarks only. pytorch-grad-cam needs torchvision, and PyPI's torchvision loads only
# with PyPI's (CUDA) build of torch, so this venv takes torch 2.13.0 from the registry (about 5 GB;
# it runs on the CPU) instead of the CPU wheel the project uses. Never used by the tests or CI.
# Usage: bash benchmarks/setup_gradcam_venv.sh   (once; idempotent)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv-gradcam"
python=${PYTHON:-python3}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import pytorch_grad_cam, monai, einops, sklearn, tqdm" 2>/dev/null; then
  echo "$venv is ready"; exit 0
fi
"$python" -m venv "$venv"
empty=$(mktemp -d)            # pip must not take the local CPU wheel: it cannot load torchvision
export PIP_FIND_LINKS="$empty"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "torch==2.13.0" "torchvision==0.28.0"
"$venv/bin/pip" install -q "grad-cam==1.5.7" "monai>=1.4" "einops>=0.7" numpy  # einops: MONAI's ViT
# benchmarks/methods.py runs volcam here too, imported from src/ (not installed: its I/O extras are
# not needed), so both libraries share one torch build; volcam's core needs only these beside torch:
"$venv/bin/pip" install -q "scikit-learn>=1.3" "tqdm>=4.60"
"$venv/bin/python" -c "import sys; sys.path.insert(0, '$here/../src'); import volcam; print('volcam', volcam.__version__, 'from src/')"
"$venv/bin/python" -c "import torch, torchvision, pytorch_grad_cam; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
rmdir "$empty"
