#!/usr/bin/env bash
# Build step of recipes/sageattention/recipe.yaml. rattler-build runs it in a copy of the
# repository ($SRC_DIR) with the build tools in $BUILD_PREFIX and python/pytorch/CUDA headers in $PREFIX.
set -euo pipefail

# Set by build.script.env from the generated variants.yaml; fail loudly rather than let torch
# probe for a GPU (with none it crashes on an empty arch list, pixi-conda-forge.md §3.5 item 4).
: "${TORCH_CUDA_ARCH_LIST:?must come from recipe.yaml build.script.env (variants.yaml torch_cuda_arch_list)}"
export TORCH_CUDA_ARCH_LIST MAX_JOBS SAGEATTN_BUILD_CELL

# nvcc comes from cuda-nvcc in the build environment.
export CUDA_HOME="${BUILD_PREFIX}"
# conda-forge installs CUDA headers under targets/x86_64-linux/include, where torch's
# cpp_extension does not look before pytorch 2.10.0 build 3 (pytorch/pytorch#144690,
# pixi-conda-forge.md §3.5 item 1); setup.py adds the directories named here.
target_include="${PREFIX}/targets/x86_64-linux/include"
include_dirs="${target_include}"
if [[ -d "${target_include}/cccl" ]]; then
  include_dirs="${include_dirs}:${target_include}/cccl"  # CUDA 13 keeps CCCL apart (pixi-conda-forge.md §3.4)
fi
export SAGEATTN_CUDA_INCLUDE_DIRS="${include_dirs}"

# Our one build path, the same as the wheels' (scripts/build.py): the torch of this environment, no isolation.
"${PYTHON}" -m pip install . -vv --no-deps --no-build-isolation
