// One fused TensorFlow CPU kernel for LazyAdam's update of an embedding table (models.LazyAdam).
//
// The same arithmetic as LazyAdam's TensorFlow-ops path (models.LazyAdam.update_step), in one
// pass instead of about twenty ops (unique, segment sum, three gathers, a dozen element-wise
// ops, three scatters), each of which reads and writes the batch's rows again:
//   g = sum of the gradient rows of each distinct index
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
//   var -= alpha * m / (sqrt(v) + epsilon)          (alpha: the bias-corrected learning rate)
// Only the rows named in `indices` are read or written. models.py compiles this file with g++
// on first use (and falls back to the TensorFlow-ops path when it cannot).
#define EIGEN_USE_THREADS

#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using CPUDevice = Eigen::ThreadPoolDevice;

class NcfLazyAdamApply : public OpKernel {
 public:
  explicit NcfLazyAdamApply(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    auto locks = tensorflow::MaybeLockVariableInputMutexesInOrder<CPUDevice, float>(
        context, /*do_lock=*/true, /*sparse=*/true, {0, 1, 2});
    Tensor var, m, v;
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 0, true, true, &var));
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 1, true, true, &m));
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 2, true, true, &v));
    const Tensor& indices = context->input(3);
    const Tensor& grad = context->input(4);
    OP_REQUIRES(context, var.dims() == 2 && var.shape() == m.shape() && var.shape() == v.shape(),
                tensorflow::errors::InvalidArgument("var, m, v must be matrices of one shape"));
    OP_REQUIRES(context, indices.dims() == 1 && grad.dims() == 2 &&
                             grad.dim_size(0) == indices.dim_size(0) &&
                             grad.dim_size(1) == var.dim_size(1),
                tensorflow::errors::InvalidArgument("grad must be (len(indices), var columns)"));
    const float alpha = context->input(5).scalar<float>()();
    const float beta1 = context->input(6).scalar<float>()();
    const float beta2 = context->input(7).scalar<float>()();
    const float epsilon = context->input(8).scalar<float>()();

    const int64_t num_rows = var.dim_size(0), dim = var.dim_size(1), n = indices.dim_size(0);
    const int32_t* index = indices.flat<int32_t>().data();
    const float* g = grad.flat<float>().data();
    float* var_data = var.flat<float>().data();
    float* m_data = m.flat<float>().data();
    float* v_data = v.flat<float>().data();

    // Group the entries by row with a counting sort over the table's rows: rows[s] is the s-th
    // distinct row in ascending order, its entries are entries[start[s] .. start[s + 1]), in the
    // order they came. The table rows are then read and written in address order, which the
    // CPU prefetches, not at random.
    std::vector<int32_t> offset(num_rows + 1, 0);  // entries per row, then where each row starts
    for (int64_t i = 0; i < n; ++i) {
      const int32_t row = index[i];
      OP_REQUIRES(context, row >= 0 && row < num_rows,
                  tensorflow::errors::InvalidArgument("index ", row, " is outside [0, ",
                                                      num_rows, ")"));
      ++offset[row + 1];
    }
    std::vector<int32_t> rows, start, entries(n);
    for (int64_t row = 0; row < num_rows; ++row) {
      if (offset[row + 1] > 0) {
        rows.push_back(static_cast<int32_t>(row));
        start.push_back(offset[row]);
      }
      offset[row + 1] += offset[row];
    }
    start.push_back(static_cast<int32_t>(n));
    for (int64_t i = 0; i < n; ++i) entries[offset[index[i]]++] = static_cast<int32_t>(i);
    const int64_t distinct = rows.size();

    constexpr int64_t kAhead = 8;  // prefetch the gradient rows of the row this far ahead
    auto update = [&](int64_t first, int64_t last) {
      // local copies: read through the lambda's references, GCC does not vectorize the update
      const float b1 = beta1, b2 = beta2, a = alpha, eps = epsilon;
      std::vector<float> sum(dim);
      for (int64_t s = first; s < last; ++s) {
        if (s + kAhead < last) {
          for (int32_t e = start[s + kAhead]; e < start[s + kAhead + 1]; ++e) {
            __builtin_prefetch(g + static_cast<int64_t>(entries[e]) * dim);
          }
        }
        const float* row_grad = g + static_cast<int64_t>(entries[start[s]]) * dim;
        for (int64_t d = 0; d < dim; ++d) sum[d] = row_grad[d];
        for (int32_t e = start[s] + 1; e < start[s + 1]; ++e) {
          row_grad = g + static_cast<int64_t>(entries[e]) * dim;
          for (int64_t d = 0; d < dim; ++d) sum[d] += row_grad[d];
        }
        const int64_t base = static_cast<int64_t>(rows[s]) * dim;
        float* __restrict__ row_m = m_data + base;
        float* __restrict__ row_v = v_data + base;
        float* __restrict__ row_var = var_data + base;
        const float* __restrict__ row_sum = sum.data();
        for (int64_t d = 0; d < dim; ++d) {
          const float new_m = b1 * row_m[d] + (1 - b1) * row_sum[d];
          const float new_v = b2 * row_v[d] + (1 - b2) * row_sum[d] * row_sum[d];
          row_m[d] = new_m;
          row_v[d] = new_v;
          row_var[d] -= a * new_m / (std::sqrt(new_v) + eps);
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, distinct, 40 * dim, update);
  }
};

}  // namespace

REGISTER_OP("NcfLazyAdamApply")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("indices: int32")
    .Input("grad: float")
    .Input("alpha: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_KERNEL_BUILDER(Name("NcfLazyAdamApply").Device(tensorflow::DEVICE_CPU), NcfLazyAdamApply);
