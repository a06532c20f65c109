// Fused TensorFlow CPU kernels: LazyAdam's update of an embedding table (models.LazyAdam), and
// the sums of a user's artist rows for `--user_input=history` (models.history_sums). Each does
// in one op what takes a dozen or more TensorFlow ops, with the same arithmetic. models.py
// compiles this file with g++ on first use (and falls back to the TensorFlow ops when it cannot).
//
// NcfLazyAdamApply: the same arithmetic as LazyAdam's TensorFlow-ops path
// (models.LazyAdam.update_step), in one pass instead of about twenty ops (unique, segment sum, three gathers, a dozen element-wise
// ops, three scatters), each of which reads and writes the batch's rows again:
//   g = sum of the gradient rows of each distinct index
//   m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + ((1 - beta2) * g) * g
//   var -= (alpha * m) / (sqrt(v) + epsilon)        (alpha: the bias-corrected learning rate)
// each product and sum in the order written, as the ops path does them: the same bits.
// Only the rows named in `indices` are read or written.
//
// NcfDenseAdamApply: Keras 3's Adam step of a dense variable (keras.optimizers.Adam.update_step,
// what LazyAdam does for the Dense layers), element by element in Keras' order:
//   m += (g - m) * (1 - beta1);  v += (g * g - v) * (1 - beta2)
//   var -= (m * alpha) / (sqrt(v) + epsilon)
// one op instead of about twenty per variable and step: the same bits, a notebook-sized step
// (batch 1,024) about a tenth faster, since at that size ops cost more than arithmetic.
#define EIGEN_USE_THREADS

#include <algorithm>
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
  // entries sorted themselves when the table has more than this many rows per entry
  static constexpr int64_t kSortBelow = 16;

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

    // Group the entries by row: rows[s] is the s-th distinct row in ascending order, its
    // entries are entries[start[s] .. start[s + 1]), in the order they came. The table rows
    // are then read and written in address order, which the CPU prefetches, not at random.
    // A counting sort over the table's rows costs a pass over all of them; where the entries
    // are few against the rows (a batch of a large table: the pass alone takes about 0.35 ms
    // at 160,112 rows and 0.8 ms at 358,868), a sort of the entries themselves is cheaper. Both give the same
    // groups in the same order, so the same arithmetic.
    for (int64_t i = 0; i < n; ++i) {
      OP_REQUIRES(context, index[i] >= 0 && index[i] < num_rows,
                  tensorflow::errors::InvalidArgument("index ", index[i], " is outside [0, ",
                                                      num_rows, ")"));
    }
    std::vector<int32_t> rows, start, entries(n);
    if (n * kSortBelow < num_rows) {
      std::vector<uint64_t> keyed(n);   // (row, entry): unique, so sorting keeps entry order
      for (int64_t i = 0; i < n; ++i) {
        keyed[i] = (static_cast<uint64_t>(index[i]) << 32) | static_cast<uint64_t>(i);
      }
      std::sort(keyed.begin(), keyed.end());
      for (int64_t e = 0; e < n; ++e) {
        const int32_t row = static_cast<int32_t>(keyed[e] >> 32);
        entries[e] = static_cast<int32_t>(keyed[e] & 0xffffffffu);
        if (e == 0 || row != rows.back()) {
          rows.push_back(row);
          start.push_back(static_cast<int32_t>(e));
        }
      }
    } else {
      std::vector<int32_t> offset(num_rows + 1, 0);  // entries per row, then where rows start
      for (int64_t i = 0; i < n; ++i) ++offset[index[i] + 1];
      for (int64_t row = 0; row < num_rows; ++row) {
        if (offset[row + 1] > 0) {
          rows.push_back(static_cast<int32_t>(row));
          start.push_back(offset[row]);
        }
        offset[row + 1] += offset[row];
      }
      for (int64_t i = 0; i < n; ++i) entries[offset[index[i]]++] = static_cast<int32_t>(i);
    }
    start.push_back(static_cast<int32_t>(n));
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

// out = the sum of rows src[index[0]], ..., src[index[num - 1]] (num >= 1), each `dim` wide,
// added in exactly the order of TensorFlow's SparseSegmentSum (segment_reduction_ops_impl.h,
// ReduceImpl): the first 2 to 9 rows left to right, then each further block of 8 summed left
// to right and added to out. So the kernels give the TensorFlow-ops path's sums bit for bit.
inline void SumRows(const float* src, int64_t dim, const int32_t* index, int64_t num,
                    float* __restrict__ out, float* __restrict__ block_sum) {
  auto row = [&](int64_t i) -> const float* __restrict__ {
    return src + static_cast<int64_t>(index[i]) * dim;
  };
  int64_t first = num == 1 ? 1 : num & 7;
  if (num > 1 && first < 2) first += 8;
  const float* r0 = row(0);
  for (int64_t d = 0; d < dim; ++d) out[d] = r0[d];
  for (int64_t i = 1; i < first; ++i) {
    const float* ri = row(i);
    for (int64_t d = 0; d < dim; ++d) out[d] = out[d] + ri[d];
  }
  for (int64_t block = first; block < num; block += 8) {
    const float* b0 = row(block);
    for (int64_t d = 0; d < dim; ++d) block_sum[d] = b0[d];
    for (int64_t i = block + 1; i < block + 8; ++i) {
      const float* ri = row(i);
      for (int64_t d = 0; d < dim; ++d) block_sum[d] = block_sum[d] + ri[d];
    }
    for (int64_t d = 0; d < dim; ++d) out[d] = out[d] + block_sum[d];
  }
}

// Checks the entries of NcfHistorySums(Grad): entry e is row row_of[e] (of k) in segment
// segment[e] (of n), the segments ascending when `sorted`.
absl::Status CheckEntries(const int32_t* row_of, const int32_t* segment, int64_t num, int64_t k,
                          int64_t n, bool sorted, const char* op) {
  for (int64_t e = 0; e < num; ++e) {
    if (row_of[e] < 0 || row_of[e] >= k || segment[e] < 0 || segment[e] >= n ||
        (sorted && e > 0 && segment[e - 1] > segment[e])) {
      return tensorflow::errors::InvalidArgument(op, ": bad entry ", e);
    }
  }
  return absl::OkStatus();
}

// A stable counting sort of entries 0 .. num - 1 by group[e] (in [0, num_groups)) -> begin
// (num_groups + 1): group g's entries are begin[g] .. begin[g + 1] of the sorted order, which
// is written to `order` (entry numbers, each group's in their original order) unless null.
std::vector<int64_t> GroupEntries(const int32_t* group, int64_t num, int64_t num_groups,
                                  std::vector<int32_t>* order) {
  std::vector<int64_t> begin(num_groups + 1, 0);
  for (int64_t e = 0; e < num; ++e) ++begin[group[e] + 1];
  for (int64_t g = 0; g < num_groups; ++g) begin[g + 1] += begin[g];
  if (order != nullptr) {
    order->resize(num);
    std::vector<int64_t> next(begin.begin(), begin.end() - 1);
    for (int64_t e = 0; e < num; ++e) (*order)[next[group[e]]++] = static_cast<int32_t>(e);
  }
  return begin;
}

// NcfHistoryIndex: the batch's history entries, for users (n,) whose artists are
// keys[starts[u] .. starts[u + 1]) % num_items (sorted keys, models.history_keys):
//   artists (k,)    the distinct artists of the batch, ascending
//   entry_row (E,)  each entry's position in `artists`, entries in user order, then key order
//   segments (E,)   each entry's position in `users`
//   counts (n,)     each user's number of entries, as float
// The TensorFlow-ops path builds the same with a ragged range, a bincount over the table, a
// where, a searchsorted and a value_rowids.
class NcfHistoryIndex : public OpKernel {
 public:
  explicit NcfHistoryIndex(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("num_items", &num_items_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& keys_tensor = context->input(0);
    const Tensor& starts_tensor = context->input(1);
    const Tensor& users_tensor = context->input(2);
    OP_REQUIRES(context, keys_tensor.dims() == 1 && starts_tensor.dims() == 1 &&
                             starts_tensor.NumElements() >= 1 && users_tensor.dims() == 1,
                tensorflow::errors::InvalidArgument(
                    "NcfHistoryIndex: keys, starts (non-empty) and users must be vectors"));
    const int64_t num_keys = keys_tensor.NumElements();
    const int64_t num_users = starts_tensor.NumElements() - 1;
    const int64_t n = users_tensor.NumElements();
    const int64_t* keys = keys_tensor.flat<int64_t>().data();
    const int64_t* starts = starts_tensor.flat<int64_t>().data();
    const int32_t* users = users_tensor.flat<int32_t>().data();

    Tensor* counts_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(3, {n}, &counts_tensor));
    float* counts = counts_tensor->flat<float>().data();
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t user = users[i];
      OP_REQUIRES(context, user >= 0 && user < num_users,
                  tensorflow::errors::InvalidArgument("user ", user, " is outside [0, ",
                                                      num_users, ")"));
      OP_REQUIRES(context, 0 <= starts[user] && starts[user] <= starts[user + 1] &&
                               starts[user + 1] <= num_keys,
                  tensorflow::errors::InvalidArgument("starts are not a sorted index of keys"));
      counts[i] = static_cast<float>(starts[user + 1] - starts[user]);
      total += starts[user + 1] - starts[user];
    }
    Tensor *entry_row_tensor = nullptr, *segments_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(1, {total}, &entry_row_tensor));
    OP_REQUIRES_OK(context, context->allocate_output(2, {total}, &segments_tensor));
    int32_t* entry_row = entry_row_tensor->flat<int32_t>().data();
    int32_t* segments = segments_tensor->flat<int32_t>().data();

    std::vector<int32_t> position(num_items_, -1);   // artist -> its place in `artists`
    int64_t e = 0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t key = starts[users[i]]; key < starts[users[i] + 1]; ++key, ++e) {
        const int64_t artist = keys[key] % num_items_;
        OP_REQUIRES(context, artist >= 0,
                    tensorflow::errors::InvalidArgument("a key is negative"));
        entry_row[e] = static_cast<int32_t>(artist);
        segments[e] = static_cast<int32_t>(i);
        position[artist] = 0;
      }
    }
    int32_t distinct = 0;
    for (int64_t artist = 0; artist < num_items_; ++artist) {
      if (position[artist] == 0) position[artist] = ++distinct;   // 1-based while counting
    }
    Tensor* artists_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, {distinct}, &artists_tensor));
    int32_t* artists = artists_tensor->flat<int32_t>().data();
    for (int64_t artist = 0; artist < num_items_; ++artist) {
      if (position[artist] > 0) artists[position[artist] - 1] = static_cast<int32_t>(artist);
    }
    for (int64_t i = 0; i < total; ++i) entry_row[i] = position[entry_row[i]] - 1;
  }

 private:
  int64_t num_items_;
};

// NcfHistorySums: per user segment s of the entries (segments sorted, as NcfHistoryIndex makes
// them), total[s] = the sum of rows[entry_row[e]] and squares[s] = the sum of
// norms[entry_row[e]] over its entries e; zeros for a segment with no entry. As TensorFlow's
// sparse segment sums of (rows, entry_row, segments) and (norms, entry_row, segments).
class NcfHistorySums : public OpKernel {
 public:
  explicit NcfHistorySums(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& rows = context->input(0);
    const Tensor& norms = context->input(1);
    const Tensor& entry_row = context->input(2);
    const Tensor& segments = context->input(3);
    OP_REQUIRES(context, tensorflow::TensorShapeUtils::IsScalar(context->input(4).shape()) &&
                             entry_row.dims() == 1 && segments.dims() == 1,
                tensorflow::errors::InvalidArgument(
                    "NcfHistorySums: num_segments must be a scalar, entries vectors"));
    const int64_t n = context->input(4).scalar<int32_t>()();
    OP_REQUIRES(context, rows.dims() == 2 && norms.NumElements() == rows.dim_size(0) &&
                             entry_row.NumElements() == segments.NumElements() && n >= 0,
                tensorflow::errors::InvalidArgument("NcfHistorySums: inconsistent shapes"));
    const int64_t k = rows.dim_size(0), dim = rows.dim_size(1), num = entry_row.NumElements();
    const int32_t* row_of = entry_row.flat<int32_t>().data();
    const int32_t* segment = segments.flat<int32_t>().data();
    OP_REQUIRES_OK(context, CheckEntries(row_of, segment, num, k, n, true, "NcfHistorySums"));
    Tensor *total_tensor = nullptr, *squares_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, {n, dim}, &total_tensor));
    OP_REQUIRES_OK(context, context->allocate_output(1, {n}, &squares_tensor));
    float* total = total_tensor->flat<float>().data();
    float* squares = squares_tensor->flat<float>().data();
    std::fill(total, total + n * dim, 0.0f);
    std::fill(squares, squares + n, 0.0f);
    // the segments are sorted: segment s is entries begin[s] .. begin[s + 1] as they stand
    const std::vector<int64_t> begin = GroupEntries(segment, num, n, nullptr);
    const float* row_data = rows.flat<float>().data();
    const float* norm_data = norms.flat<float>().data();
    auto sum = [&](int64_t first, int64_t last) {
      std::vector<float> scratch(dim);
      for (int64_t s = first; s < last; ++s) {
        const int64_t count = begin[s + 1] - begin[s];
        if (count == 0) continue;
        SumRows(row_data, dim, row_of + begin[s], count, total + s * dim, scratch.data());
        SumRows(norm_data, 1, row_of + begin[s], count, squares + s, scratch.data());
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, n,
                      std::max<int64_t>(1, num / std::max<int64_t>(n, 1)) * dim * 2, sum);
  }
};

// NcfHistorySumsGrad: NcfHistorySums' gradient with respect to rows, given the gradients of
// total (n, d) and of squares (n,) (empty when squares are not used), the norms being the
// rows' squared lengths: d_rows[r] = the sum of d_total[segments[e]] over the entries e of row
// r (in entry order) + 2 * (the same sum of d_squares) * rows[r]. As the TensorFlow-ops path:
// sparse segment sums over the entries sorted (stably) by row, then the element-wise ops.
class NcfHistorySumsGrad : public OpKernel {
 public:
  explicit NcfHistorySumsGrad(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& d_total = context->input(0);
    const Tensor& d_squares = context->input(1);
    const Tensor& rows = context->input(2);
    const Tensor& entry_row = context->input(3);
    const Tensor& segments = context->input(4);
    OP_REQUIRES(context, rows.dims() == 2 && d_total.dims() == 2 &&
                             d_total.dim_size(1) == rows.dim_size(1) &&
                             entry_row.NumElements() == segments.NumElements() &&
                             (d_squares.NumElements() == 0 ||
                              d_squares.NumElements() == d_total.dim_size(0)),
                tensorflow::errors::InvalidArgument("NcfHistorySumsGrad: inconsistent shapes"));
    OP_REQUIRES(context, entry_row.dims() == 1 && segments.dims() == 1,
                tensorflow::errors::InvalidArgument("NcfHistorySumsGrad: entries must be vectors"));
    const int64_t k = rows.dim_size(0), dim = rows.dim_size(1), n = d_total.dim_size(0);
    const int64_t num = entry_row.NumElements();
    const int32_t* row_of = entry_row.flat<int32_t>().data();
    const int32_t* segment = segments.flat<int32_t>().data();
    OP_REQUIRES_OK(context,
                   CheckEntries(row_of, segment, num, k, n, false, "NcfHistorySumsGrad"));
    // the entries' segments grouped by row, stably
    std::vector<int32_t> by_row;
    const std::vector<int64_t> begin = GroupEntries(row_of, num, k, &by_row);
    for (int32_t& entry : by_row) entry = segment[entry];
    Tensor* d_rows_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, {k, dim}, &d_rows_tensor));
    float* d_rows = d_rows_tensor->flat<float>().data();
    const float* d_total_data = d_total.flat<float>().data();
    const float* d_squares_data =
        d_squares.NumElements() ? d_squares.flat<float>().data() : nullptr;
    const float* row_data = rows.flat<float>().data();
    auto gradient = [&](int64_t first, int64_t last) {
      std::vector<float> scratch(dim);
      for (int64_t r = first; r < last; ++r) {
        float* out = d_rows + r * dim;
        const int64_t count = begin[r + 1] - begin[r];
        if (count == 0) {
          std::fill(out, out + dim, 0.0f);
        } else {
          SumRows(d_total_data, dim, by_row.data() + begin[r], count, out, scratch.data());
        }
        if (d_squares_data != nullptr) {
          float scale = 0.0f;
          if (count > 0) {
            SumRows(d_squares_data, 1, by_row.data() + begin[r], count, &scale, scratch.data());
          }
          const float twice = 2.0f * scale;
          const float* row = row_data + r * dim;
          for (int64_t d = 0; d < dim; ++d) out[d] = out[d] + twice * row[d];
        }
      }
    };
    auto* workers = context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, k,
                      std::max<int64_t>(1, num / std::max<int64_t>(k, 1)) * dim * 2, gradient);
  }
};

}  // namespace

REGISTER_OP("NcfHistoryIndex")
    .Input("keys: int64")
    .Input("starts: int64")
    .Input("users: int32")
    .Output("artists: int32")
    .Output("entry_row: int32")
    .Output("segments: int32")
    .Output("counts: float")
    .Attr("num_items: int >= 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle users;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &users));
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Vector(c->UnknownDim()));
      c->set_output(2, c->Vector(c->UnknownDim()));
      c->set_output(3, c->Vector(c->Dim(users, 0)));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("NcfHistoryIndex").Device(tensorflow::DEVICE_CPU), NcfHistoryIndex);

REGISTER_OP("NcfHistorySums")
    .Input("rows: float")
    .Input("norms: float")
    .Input("entry_row: int32")
    .Input("segments: int32")
    .Input("num_segments: int32")
    .Output("total: float")
    .Output("squares: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::DimensionHandle n;
      tensorflow::shape_inference::ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(4, &n));
      c->set_output(0, c->Matrix(n, c->Dim(rows, 1)));
      c->set_output(1, c->Vector(n));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("NcfHistorySums").Device(tensorflow::DEVICE_CPU), NcfHistorySums);

REGISTER_OP("NcfHistorySumsGrad")
    .Input("d_total: float")
    .Input("d_squares: float")
    .Input("rows: float")
    .Input("entry_row: int32")
    .Input("segments: int32")
    .Output("d_rows: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(2));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("NcfHistorySumsGrad").Device(tensorflow::DEVICE_CPU),
                        NcfHistorySumsGrad);

class NcfDenseAdamApply : public OpKernel {
 public:
  explicit NcfDenseAdamApply(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    auto locks = tensorflow::MaybeLockVariableInputMutexesInOrder<CPUDevice, float>(
        context, /*do_lock=*/true, /*sparse=*/false, {0, 1, 2});
    Tensor var, m, v;
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 0, true, false, &var));
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 1, true, false, &m));
    OP_REQUIRES_OK(context, tensorflow::GetInputTensorFromVariable<CPUDevice, float>(
                                context, 2, true, false, &v));
    const Tensor& grad = context->input(3);
    OP_REQUIRES(context, var.shape() == m.shape() && var.shape() == v.shape() &&
                             var.shape() == grad.shape(),
                tensorflow::errors::InvalidArgument("var, m, v and grad must be of one shape"));
    const float alpha = context->input(4).scalar<float>()();
    const float one_minus_beta1 = context->input(5).scalar<float>()();
    const float one_minus_beta2 = context->input(6).scalar<float>()();
    const float epsilon = context->input(7).scalar<float>()();
    const float* g = grad.flat<float>().data();
    float* var_data = var.flat<float>().data();
    float* m_data = m.flat<float>().data();
    float* v_data = v.flat<float>().data();
    const int64_t size = var.NumElements();
    for (int64_t i = 0; i < size; ++i) {
      const float mi = m_data[i] + (g[i] - m_data[i]) * one_minus_beta1;
      const float vi = v_data[i] + (g[i] * g[i] - v_data[i]) * one_minus_beta2;
      m_data[i] = mi;
      v_data[i] = vi;
      var_data[i] = var_data[i] - (mi * alpha) / (std::sqrt(vi) + epsilon);
    }
  }
};

REGISTER_OP("NcfDenseAdamApply")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("grad: float")
    .Input("alpha: float")
    .Input("one_minus_beta1: float")
    .Input("one_minus_beta2: float")
    .Input("epsilon: float")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::NoOutputs);

REGISTER_KERNEL_BUILDER(Name("NcfDenseAdamApply").Device(tensorflow::DEVICE_CPU),
                        NcfDenseAdamApply);

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
