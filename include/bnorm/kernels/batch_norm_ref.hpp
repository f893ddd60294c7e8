// bnorm/kernels/batch_norm_ref.hpp: the permanent reference batch-norm kernels.
//
// Naive loops over the (N, C, S) view of bnorm/kernels/batch_norm.hpp, one channel at a
// time, accumulation in double, two-pass variance. Same contracts (shapes, formulas,
// assigned outputs, null gamma/beta meaning 1/0) as the dispatching functions there.
// Instantiated for T = float (what Impl::reference runs) and T = double (used by the
// finite-difference gradient tests). Never optimized: every fast kernel is tested
// against it. mean_d and var_d (C, or null): the statistics in double before their
// rounding to T, as the dispatching overloads document.
#pragma once

#include "bnorm/kernels/batch_norm.hpp"

namespace bnorm::kernels::reference {

template <typename T>
void moments(const T* x, const BatchNormDims& dims, T* mean, T* var, double* mean_d = nullptr,
             double* var_d = nullptr);

template <typename T>
void forward_training(const T* x, const BatchNormDims& dims, const T* gamma, const T* beta, T epsilon, T* y,
                      T* mean, T* var, T* invstd, double* mean_d = nullptr, double* var_d = nullptr);

template <typename T>
void forward_inference(const T* x, const BatchNormDims& dims, const T* mean, const T* var,
                       const T* gamma, const T* beta, T epsilon, T* y);

template <typename T>
void backward_training(const T* dy, const T* x, const BatchNormDims& dims, const T* mean,
                       const T* invstd, const T* gamma, T* dx, T* dgamma, T* dbeta);

template <typename T>
void backward_inference(const T* dy, const T* x, const BatchNormDims& dims, const T* mean,
                        const T* var, const T* gamma, T epsilon, T* dx, T* dgamma, T* dbeta);

template <typename T>
void forward_training_relu(const T* x, const BatchNormDims& dims, const T* gamma, const T* beta, T epsilon,
                           T* y, T* mean, T* var, T* invstd, double* mean_d = nullptr,
                           double* var_d = nullptr);

template <typename T>
void backward_training_relu(const T* dy, const T* x, const T* y, const BatchNormDims& dims, const T* mean,
                            const T* invstd, const T* gamma, T* dx, T* dgamma, T* dbeta);

template <typename T>
void backward_training_relu(const T* dy, const T* x, const BatchNormDims& dims, const T* mean, const T* invstd,
                            const T* gamma, const T* beta, T* dx, T* dgamma, T* dbeta);

template <typename T>
void backward_training_dx(const T* dy, const T* x, const BatchNormDims& dims, const T* mean, const T* invstd,
                          const T* gamma, const double* sum_dy, const double* sum_dy_xhat, std::int64_t count,
                          T* dx);

}  // namespace bnorm::kernels::reference
