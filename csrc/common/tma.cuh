// Torch-free wrappers for Hopper's (sm_90) asynchronous copies: shared-memory mbarriers, TMA bulk
// tensor loads that complete on them, register reallocation between warpgroups (setmaxnreg), and
// the host-side encoding of a TMA tensor map.
//
// Protocol (PTX ISA "mbarrier" and "cp.async.bulk.tensor"): a "full" barrier per pipeline stage is
// armed by the producer with the number of bytes it expects (arrive.expect_tx, one arrival); the
// TMA unit counts the bytes it writes against it (complete_tx) and the phase flips when both the
// arrival and all bytes are in. Consumers wait on the phase parity. An "empty" barrier per stage
// counts the consumers' arrivals after their last read of the stage, before the producer refills it.
// TMA writes and wgmma reads shared memory through the same async proxy, so no proxy fence is
// needed between them; the mbarrier wait orders them.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (header only: the driver function is looked up at run time)
#include <cuda_runtime.h>

#include <cstdint>

namespace sageattention {
namespace ptx {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}

// Makes the barrier initializations visible to the async proxy (TMA) before any copy uses them.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival that also tells the barrier to expect `bytes` more transaction bytes this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Blocks until the phase with parity `parity` of the barrier has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// TMA: the box at coordinates (c0 innermost .. c3) of a 4-d tensor map into shared memory at
// `dst`, completing `bar`'s transaction bytes. Out-of-bounds elements are written as zeros and
// still counted, so every copy of a box delivers the same byte count.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                                            int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

// Register reallocation between warpgroups (all 128 threads of the warpgroup execute it).
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
#endif

// Host: encodes a 4-d uint8 tensor map (dims innermost first, strides in bytes of dims 1..3, box
// in elements) through the driver's cuTensorMapEncodeTiled, looked up once through the runtime so
// the extension does not link libcuda. Returns cudaErrorInvalidValue when the driver rejects it
// (e.g. a stride not a multiple of 16 bytes; the launchers check those first).
inline cudaError_t encode_tensor_map_u8_4d(CUtensorMap* map, const void* base, const cuuint64_t (&dims)[4],
                                           const cuuint64_t (&strides)[3], const cuuint32_t (&box)[4],
                                           CUtensorMapSwizzle swizzle) {
  // cuTensorMapEncodeTiled's signature (CUDA 12.0 driver API, unchanged since).
  using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static EncodeTiled encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                                             &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &found);
#endif
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<EncodeTiled>(fn)
               : nullptr;
  }();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult res = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, const_cast<void*>(base), dims, strides, box,
                              element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return res == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace ptx
}  // namespace sageattention
