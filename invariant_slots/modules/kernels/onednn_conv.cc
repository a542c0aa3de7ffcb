// 2-D convolution passes (NHWC inputs and outputs, HWIO kernels) through oneDNN,
// as XLA FFI handlers for the CPU. Loaded by invariant_slots/modules/onednn.py.
//
// One handler, three passes, chosen by the `pass` attribute:
//   0 forward:          a = inputs [N, H, W, C],       b = kernel [KH, KW, C, O]  -> outputs [N, OH, OW, O]
//   1 input gradient:   a = output grad [N, OH, OW, O], b = kernel                 -> input grad [N, H, W, C]
//   2 kernel gradient:  a = inputs,                     b = output grad            -> kernel grad [KH, KW, C, O]
// Strides (sh, sw) and non-negative padding (low, high per axis) are attributes.
// The activations stay in NHWC; oneDNN chooses the kernel layout, and the
// kernel is reordered from or to HWIO inside the call.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Tag = dnnl::memory::format_tag;
using Dims = dnnl::memory::dims;
constexpr auto kF32 = dnnl::memory::data_type::f32;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// Everything one (pass, shape) needs, built once.
struct Plan {
  dnnl::primitive primitive;
  dnnl::memory::desc activation_a, activation_out;  // NHWC descriptors of a and of out.
  dnnl::memory::desc kernel_user;                   // HWIO.
  dnnl::memory::desc kernel_chosen;                 // oneDNN's layout for the kernel.
};

using Key = std::tuple<int64_t, Dims, Dims, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

std::unique_ptr<Plan> MakePlan(int64_t pass, const Dims& src_dims, const Dims& dst_dims,
                               const Dims& kernel_dims, const Dims& strides,
                               const Dims& pad_low, const Dims& pad_high) {
  auto& engine = Engine();
  dnnl::memory::desc src(src_dims, kF32, Tag::nhwc), dst(dst_dims, kF32, Tag::nhwc);
  dnnl::memory::desc kernel_user(kernel_dims, kF32, Tag::hwio);
  dnnl::memory::desc kernel_any(kernel_dims, kF32, Tag::any);
  auto forward = dnnl::convolution_forward::primitive_desc(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      kernel_any, dst, strides, pad_low, pad_high);
  auto plan = std::make_unique<Plan>();
  plan->kernel_user = kernel_user;
  if (pass == 0) {
    plan->primitive = dnnl::convolution_forward(forward);
    plan->kernel_chosen = forward.weights_desc();
    plan->activation_a = src;
    plan->activation_out = dst;
  } else if (pass == 1) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, kernel_any, dst, strides, pad_low,
        pad_high, forward);
    plan->primitive = dnnl::convolution_backward_data(pd);
    plan->kernel_chosen = pd.weights_desc();
    plan->activation_a = dst;
    plan->activation_out = src;
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        engine, dnnl::algorithm::convolution_direct, src, kernel_any, dst, strides, pad_low,
        pad_high, forward);
    plan->primitive = dnnl::convolution_backward_weights(pd);
    plan->kernel_chosen = pd.diff_weights_desc();
    plan->activation_a = src;
    plan->activation_out = dst;  // The second activation (output grad).
  }
  return plan;
}

const Plan& GetPlan(int64_t pass, const Dims& src_dims, const Dims& dst_dims,
                    const Dims& kernel_dims, const Dims& strides, const Dims& pad_low,
                    const Dims& pad_high) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  Key key{pass, src_dims, kernel_dims, strides[0], strides[1], pad_low[0], pad_low[1],
          pad_high[0], pad_high[1]};
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[key];
  if (!plan) plan = MakePlan(pass, src_dims, dst_dims, kernel_dims, strides, pad_low, pad_high);
  return *plan;
}

Dims Nchw(ffi::Span<const int64_t> nhwc) { return {nhwc[0], nhwc[3], nhwc[1], nhwc[2]}; }

ffi::Error Convolution(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> out, int64_t pass, int64_t sh, int64_t sw,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right) {
  if (pass < 0 || pass > 2) return ffi::Error::InvalidArgument("pass must be 0, 1 or 2");
  if (a.dimensions().size() != 4 || b.dimensions().size() != 4 ||
      out->dimensions().size() != 4) {
    return ffi::Error::InvalidArgument("convolution operands must be 4-D");
  }
  // NHWC inputs, NHWC outputs and the HWIO kernel, whichever buffers hold them.
  ffi::Span<const int64_t> inputs = pass == 1 ? out->dimensions() : a.dimensions();
  ffi::Span<const int64_t> outputs = pass == 0 ? out->dimensions() : pass == 1 ? a.dimensions()
                                                                               : b.dimensions();
  ffi::Span<const int64_t> kernel = pass == 2 ? out->dimensions() : b.dimensions();
  Dims kernel_dims = {kernel[3], kernel[2], kernel[0], kernel[1]};  // O, I, KH, KW.
  try {
    const Plan& plan = GetPlan(pass, Nchw(inputs), Nchw(outputs), kernel_dims, {sh, sw},
                               {pad_top, pad_left}, {pad_bottom, pad_right});
    auto& engine = Engine();
    auto& stream = Stream();
    bool reorder = plan.kernel_chosen != plan.kernel_user;
    if (pass == 2) {
      dnnl::memory src(plan.activation_a, engine, a.typed_data());
      dnnl::memory grad(plan.activation_out, engine, b.typed_data());
      dnnl::memory user(plan.kernel_user, engine, out->typed_data());
      dnnl::memory chosen = reorder ? dnnl::memory(plan.kernel_chosen, engine) : user;
      plan.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, grad},
                                      {DNNL_ARG_DIFF_WEIGHTS, chosen}});
      if (reorder) dnnl::reorder(chosen, user).execute(stream, chosen, user);
    } else {
      dnnl::memory input(plan.activation_a, engine, a.typed_data());
      dnnl::memory user(plan.kernel_user, engine, b.typed_data());
      dnnl::memory result(plan.activation_out, engine, out->typed_data());
      dnnl::memory chosen = user;
      if (reorder) {
        chosen = dnnl::memory(plan.kernel_chosen, engine);
        dnnl::reorder(user, chosen).execute(stream, user, chosen);
      }
      if (pass == 0) {
        plan.primitive.execute(stream, {{DNNL_ARG_SRC, input}, {DNNL_ARG_WEIGHTS, chosen},
                                        {DNNL_ARG_DST, result}});
      } else {
        plan.primitive.execute(stream, {{DNNL_ARG_DIFF_DST, input}, {DNNL_ARG_WEIGHTS, chosen},
                                        {DNNL_ARG_DIFF_SRC, result}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& error) {
    return ffi::Error::Internal(std::string("oneDNN: ") + error.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvolution, Convolution,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pass")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_bottom")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<int64_t>("pad_right"));
