// bnorm/kernels/dense.hpp: stateless fully connected (Keras Dense) kernels (float32, CPU).
//
// Layout. Row-major throughout: x is (N, K) (N rows of K input features; a layer maps
// any leading dims into N), w is (K, M) in the Keras kernel layout (input features
// first, units last; the transpose of PyTorch's Linear.weight), b is (M), y is (N, M).
//
//   forward:   y[n, m]  = b[m] + sum_k x[n, k] * w[k, m]            y  = x @ w + b
//   backward:  dx[n, k] = sum_m dy[n, m] * w[k, m]                  dx = dy @ w^T
//              dw[k, m] += sum_n x[n, k] * dy[n, m]                 dw += x^T @ dy
//              db[m]    += sum_n dy[n, m]
//
// ASSIGNED vs ACCUMULATED. y and dx are ASSIGNED (overwritten; prior contents, even
// NaN, are never read). dw and db are ACCUMULATED into (+=): the caller zeroes them
// once per step, and a weight used several times (shared layers, gradient accumulation
// over micro-batches) sums its gradients without a temporary. (This differs from the
// batch-norm kernels, whose outputs are all assigned.) Nullable outputs (dx, dw, db)
// are skipped when null; b == null means no bias (b = 0).
//
// Empty shapes are well defined: N == 0 leaves dw and db unchanged (adds zero);
// K == 0 makes y = b (or 0); M == 0 makes dx = 0.
//
// Preconditions (checked by the callers at the API boundary, asserted in debug builds):
// N, K, M >= 0; pointers to buffers of the sizes in the shape comments (may be null
// when that size is 0); outputs do not alias any input or each other.
//
// Implementation. The fast kernels call OpenBLAS cblas_sgemm (float accumulation inside
// the GEMM, blocked in an order OpenBLAS chooses) plus a bias pass; db is summed in
// double. OpenBLAS runs its own thread pool with its default thread count (all cores,
// or OPENBLAS_NUM_THREADS / OMP_NUM_THREADS from the environment); bnorm exposes no
// setting for it, and bnorm's batch-norm set_num_threads does not affect it. Results
// match the reference to float rounding (relative error about sqrt(K) ulp for y and dw,
// sqrt(M) ulp for dx) but are not promised bitwise identical across CPUs, thread
// counts or row counts N (OpenBLAS picks its kernels per CPU and per shape: on some
// CPUs the rows of a 3-row call and of a 10-row call differ in the last bits).
// Repeating a call with the same shapes and thread count on one machine gives the same
// bits (bit-for-bit resumption from a checkpoint relies on it). A call with N, K or M above 2^31 - 1 (OpenBLAS's int) runs the reference loops.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

// The GEMM kernel family OpenBLAS runs on this machine ("SkylakeX", "Haswell",
// "Sandybridge", ...: openblas_get_corename). OpenBLAS picks it per CPU at load time, and
// the environment variable OPENBLAS_CORETYPE overrides it; other families (and other row
// counts within one family) round the products differently in the last bits, which is
// why the fast results above are promised to float rounding only. `make test` runs the
// suite a second time with another family (scripts/test-variant.sh).
const char* blas_kernel_family();

// y = x @ w + b.
void dense_forward(const float* x,  // (N, K)
                   const float* w,  // (K, M)
                   const float* b,  // (M) or null (no bias)
                   std::int64_t N, std::int64_t K, std::int64_t M,
                   float* y);       // (N, M) assigned

// Gradients of dense_forward given dy = dL/dy. b does not enter the gradients.
void dense_backward(const float* dy,  // (N, M)
                    const float* x,   // (N, K): the forward input
                    const float* w,   // (K, M)
                    std::int64_t N, std::int64_t K, std::int64_t M,
                    float* dx,        // (N, K) ASSIGNED, or null
                    float* dw,        // (K, M) ACCUMULATED (+=), or null
                    float* db);       // (M) ACCUMULATED (+=), or null

// The permanent reference: the formulas above as naive loops, every sum accumulated in
// double and rounded once to T. Same contract (assigned y/dx, accumulated dw/db, nulls,
// empty shapes). Instantiated for T = float (the fast kernels are tested against it)
// and T = double (finite-difference gradient tests). Never optimized.
namespace reference {

template <typename T>
void dense_forward(const T* x,  // (N, K)
                   const T* w,  // (K, M)
                   const T* b,  // (M) or null
                   std::int64_t N, std::int64_t K, std::int64_t M,
                   T* y);       // (N, M) assigned

template <typename T>
void dense_backward(const T* dy,  // (N, M)
                    const T* x,   // (N, K)
                    const T* w,   // (K, M)
                    std::int64_t N, std::int64_t K, std::int64_t M,
                    T* dx,        // (N, K) ASSIGNED, or null
                    T* dw,        // (K, M) ACCUMULATED (+=), or null
                    T* db);       // (M) ACCUMULATED (+=), or null

}  // namespace reference
}  // namespace bnorm::kernels
