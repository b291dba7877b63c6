#!/usr/bin/env bash
# Build step of recipes/sageattn3/recipe.yaml: the package in sageattention3_blackwell/ of the
# repository copy ($SRC_DIR); build tools in $BUILD_PREFIX, python/pytorch/CUDA in $PREFIX.
set -euo pipefail

# Set by build.script.env from the generated variants.yaml; fail loudly rather than probe for a GPU
# (upstream's setup.py calls torch.cuda.get_device_capability(), conda-recipes.md §3.8).
: "${TORCH_CUDA_ARCH_LIST:?must come from recipe.yaml build.script.env (variants.yaml torch_cuda_arch_list)}"
export TORCH_CUDA_ARCH_LIST MAX_JOBS SAGEATTN_BUILD_CELL

export CUDA_HOME="${BUILD_PREFIX}"  # nvcc comes from cuda-nvcc in the build environment
# conda-forge's CUDA headers live under targets/x86_64-linux/include (pytorch/pytorch#144690);
target_include="${PREFIX}/targets/x86_64-linux/include"
include_dirs="${target_include}:${PREFIX}/include"
if [[ -d "${target_include}/cccl" ]]; then
  include_dirs="${include_dirs}:${target_include}/cccl"  # CUDA 13 keeps CCCL apart (pixi-conda-forge.md §3.4)
fi
export SAGEATTN_CUDA_INCLUDE_DIRS="${include_dirs}"

"${PYTHON}" -m pip install ./sageattention3_blackwell -vv --no-deps --no-build-isolation
