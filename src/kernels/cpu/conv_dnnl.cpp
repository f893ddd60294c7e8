// 2-D convolution through oneDNN (libdnnl), with the reference as the fallback.
// Contract, formulas, layouts and the implementation list: bnorm/kernels/conv.hpp.
#include <oneapi/dnnl/dnnl.hpp>

#include <cassert>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "bnorm/kernels/conv.hpp"

namespace bnorm::kernels {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

bool verbose() {
  static const bool on = [] {
    const char* value = std::getenv("BNORM_VERBOSE");
    return value != nullptr && std::string(value) == "1";
  }();
  return on;
}

// One CPU engine for the process; a stream per calling thread, so that concurrent calls
// never share a stream.
const dnnl::engine& engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

memory::desc activation_md(const Conv2dDesc& d, std::int64_t h, std::int64_t w, std::int64_t c) {
  return memory::desc({d.N, c, h, w}, memory::data_type::f32,
                      d.layout == ConvLayout::nchw ? tag::nchw : tag::nhwc);
}

// The caller's kernel, Keras (kh, kw, Cin_g, Cout), described to oneDNN by strides: logical
// dims (O, I, kh, kw), or (G, O/G, I/G, kh, kw) when grouped (output channel f = g*O_g + o).
memory::desc user_kernel_md(const Conv2dDesc& d) {
  const std::int64_t cin_g = d.cin_per_group(), cout_g = d.Cout / d.groups;
  const std::int64_t s_w = cin_g * d.Cout, s_h = d.kw * s_w;
  if (d.groups == 1)
    return memory::desc({d.Cout, cin_g, d.kh, d.kw}, memory::data_type::f32, {1, d.Cout, s_h, s_w});
  return memory::desc({d.groups, cout_g, cin_g, d.kh, d.kw}, memory::data_type::f32,
                      {cout_g, 1, d.Cout, s_h, s_w});
}

memory::desc any_kernel_md(const Conv2dDesc& d) {
  const std::int64_t cin_g = d.cin_per_group(), cout_g = d.Cout / d.groups;
  if (d.groups == 1) return memory::desc({d.Cout, cin_g, d.kh, d.kw}, memory::data_type::f32, tag::any);
  return memory::desc({d.groups, cout_g, cin_g, d.kh, d.kw}, memory::data_type::f32, tag::any);
}

memory::desc bias_md(const Conv2dDesc& d) {
  return memory::desc({d.Cout}, memory::data_type::f32, tag::x);
}

// A compiled primitive for one (description, operation, bias) triple, or the reason there
// is none. Kernel reorders between the Keras layout and the primitive's own format.
struct Entry {
  bool ok = false;
  std::string explain;  // "onednn (jit:avx2)" or "reference (oneDNN: ...)"
  dnnl::primitive prim;
  memory::desc user_kernel, prim_kernel, scratchpad;
  bool reorder_kernel = false;
  dnnl::reorder kernel_reorder;  // forward/backward_data: user -> prim; backward_weights: prim -> user
};

using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                       std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                       std::int64_t, std::int64_t, std::int64_t, std::int64_t, int, int, bool>;

Key key_of(const Conv2dDesc& d, ConvOp op, bool has_bias) {
  return {d.N,
          d.H,
          d.W,
          d.Cin,
          d.Cout,
          d.kh,
          d.kw,
          d.stride_h,
          d.stride_w,
          d.dilation_h,
          d.dilation_w,
          d.pad_top,
          d.pad_left,
          d.pad_bottom,
          d.pad_right,
          d.groups,
          static_cast<int>(d.layout),
          static_cast<int>(op),
          has_bias};
}

std::shared_ptr<const Entry> create(const Conv2dDesc& d, ConvOp op, bool has_bias) {
  auto e = std::make_shared<Entry>();
  try {
    const memory::dims strides{d.stride_h, d.stride_w};
    const memory::dims dilates{d.dilation_h - 1, d.dilation_w - 1};
    const memory::dims pad_l{d.pad_top, d.pad_left}, pad_r{d.pad_bottom, d.pad_right};
    const memory::desc src = activation_md(d, d.H, d.W, d.Cin);
    const memory::desc dst = activation_md(d, d.out_h(), d.out_w(), d.Cout);
    const memory::desc kany = any_kernel_md(d);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // per-call scratchpads: thread-safe
    const auto alg = dnnl::algorithm::convolution_direct;
    const auto fwd_desc =
        has_bias && op != ConvOp::backward_data
            ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, src, kany, bias_md(d),
                                              dst, strides, dilates, pad_l, pad_r)
            : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, alg, src, kany, dst, strides,
                                              dilates, pad_l, pad_r);
    const dnnl::convolution_forward::primitive_desc fwd_pd(fwd_desc, attr, engine());
    e->user_kernel = user_kernel_md(d);
    const char* impl = nullptr;
    if (op == ConvOp::forward) {
      e->prim = dnnl::convolution_forward(fwd_pd);
      e->prim_kernel = fwd_pd.weights_desc();
      e->scratchpad = fwd_pd.scratchpad_desc();
      impl = fwd_pd.impl_info_str();
    } else if (op == ConvOp::backward_data) {
      const dnnl::convolution_backward_data::desc bd(alg, src, kany, dst, strides, dilates, pad_l, pad_r);
      const dnnl::convolution_backward_data::primitive_desc pd(bd, attr, engine(), fwd_pd);
      e->prim = dnnl::convolution_backward_data(pd);
      e->prim_kernel = pd.weights_desc();
      e->scratchpad = pd.scratchpad_desc();
      impl = pd.impl_info_str();
    } else {
      const auto bd = has_bias ? dnnl::convolution_backward_weights::desc(alg, src, kany, bias_md(d), dst,
                                                                          strides, dilates, pad_l, pad_r)
                               : dnnl::convolution_backward_weights::desc(alg, src, kany, dst, strides,
                                                                          dilates, pad_l, pad_r);
      const dnnl::convolution_backward_weights::primitive_desc pd(bd, attr, engine(), fwd_pd);
      e->prim = dnnl::convolution_backward_weights(pd);
      e->prim_kernel = pd.diff_weights_desc();
      e->scratchpad = pd.scratchpad_desc();
      impl = pd.impl_info_str();
    }
    e->reorder_kernel = e->prim_kernel != e->user_kernel;
    if (e->reorder_kernel) {
      e->kernel_reorder = op == ConvOp::backward_weights
                              ? dnnl::reorder(dnnl::reorder::primitive_desc(engine(), e->prim_kernel,
                                                                            engine(), e->user_kernel))
                              : dnnl::reorder(dnnl::reorder::primitive_desc(engine(), e->user_kernel,
                                                                            engine(), e->prim_kernel));
    }
    e->ok = true;
    e->explain = std::string("onednn (") + (impl != nullptr ? impl : "?") + ")";
  } catch (const dnnl::error& err) {
    e->ok = false;
    e->explain = std::string("reference (oneDNN: ") + err.what() + ")";
  }
  return e;
}

// The primitive cache: compiled once per description, shared by all threads.
std::shared_ptr<const Entry> lookup(const Conv2dDesc& d, ConvOp op, bool has_bias) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const Entry>> cache;
  constexpr std::size_t capacity = 256;
  const Key key = key_of(d, op, has_bias);
  {
    const std::lock_guard<std::mutex> lock(mutex);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  // Created outside the lock (primitive creation can take milliseconds); two threads
  // racing on a new description both create it, and the first stored wins.
  auto entry = create(d, op, has_bias);
  if (verbose()) {
    static const char* const names[] = {"forward", "backward_data", "backward_weights"};
    std::cerr << "bnorm conv2d " << names[static_cast<int>(op)] << " N=" << d.N << " H=" << d.H
              << " W=" << d.W << " Cin=" << d.Cin << " Cout=" << d.Cout << " k=" << d.kh << "x" << d.kw
              << " groups=" << d.groups << (d.layout == ConvLayout::nchw ? " nchw" : " nhwc") << ": "
              << entry->explain << "\n";
  }
  const std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= capacity) cache.clear();
  return cache.emplace(key, std::move(entry)).first->second;
}

// The caller's buffers as oneDNN memories (no copies).
memory wrap(const memory::desc& md, const float* p) {
  return memory(md, engine(), const_cast<float*>(p));  // oneDNN takes void*; inputs are only read
}

// The user's (kh, kw, Cin/groups, Cout) kernel in the primitive's format: wrapped as it
// is, or reordered into a new buffer on stream s when the primitive wants another one.
memory kernel_for_primitive(const Entry& e, const float* kernel, dnnl::stream& s) {
  memory k = wrap(e.user_kernel, kernel);
  if (!e.reorder_kernel) return k;
  memory kp(e.prim_kernel, engine());
  e.kernel_reorder.execute(s, k, kp);
  return kp;
}

bool use_onednn(const Conv2dDesc& d, ConvOp op, bool has_bias, ConvImpl impl,
                std::shared_ptr<const Entry>& entry) {
  if (impl == ConvImpl::reference) return false;
  entry = lookup(d, op, has_bias);
  return entry->ok;
}

}  // namespace

std::string conv2d_explain(const Conv2dDesc& d, ConvOp op, bool has_bias) {
  if (d.N == 0) return "none (empty batch: nothing to compute)";
  return lookup(d, op, has_bias)->explain;
}

void conv2d_forward(const Conv2dDesc& d, const float* x, const float* kernel, const float* bias, float* y,
                    ConvImpl impl) {
  assert(d.N >= 0 && d.out_h() >= 1 && d.out_w() >= 1);
  if (d.N == 0) return;
  std::shared_ptr<const Entry> e;
  if (!use_onednn(d, ConvOp::forward, bias != nullptr, impl, e)) {
    reference::conv2d_forward(d, x, kernel, bias, y);
    return;
  }
  dnnl::stream& s = stream();
  const memory k = kernel_for_primitive(*e, kernel, s);
  memory scratch(e->scratchpad, engine());
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, wrap(activation_md(d, d.H, d.W, d.Cin), x)},
      {DNNL_ARG_WEIGHTS, k},
      {DNNL_ARG_DST, wrap(activation_md(d, d.out_h(), d.out_w(), d.Cout), y)},
      {DNNL_ARG_SCRATCHPAD, scratch}};
  if (bias != nullptr) args.emplace(DNNL_ARG_BIAS, wrap(bias_md(d), bias));
  e->prim.execute(s, args);
  s.wait();
}

void conv2d_backward_data(const Conv2dDesc& d, const float* dy, const float* kernel, float* dx,
                          ConvImpl impl) {
  assert(d.N >= 0 && d.out_h() >= 1 && d.out_w() >= 1);
  if (d.N == 0) return;
  std::shared_ptr<const Entry> e;
  if (!use_onednn(d, ConvOp::backward_data, false, impl, e)) {
    reference::conv2d_backward_data(d, dy, kernel, dx);
    return;
  }
  dnnl::stream& s = stream();
  const memory k = kernel_for_primitive(*e, kernel, s);
  memory scratch(e->scratchpad, engine());
  e->prim.execute(s, {{DNNL_ARG_DIFF_DST, wrap(activation_md(d, d.out_h(), d.out_w(), d.Cout), dy)},
                      {DNNL_ARG_WEIGHTS, k},
                      {DNNL_ARG_DIFF_SRC, wrap(activation_md(d, d.H, d.W, d.Cin), dx)},
                      {DNNL_ARG_SCRATCHPAD, scratch}});
  s.wait();
}

void conv2d_backward_weights(const Conv2dDesc& d, const float* x, const float* dy, float* dkernel,
                             float* dbias, ConvImpl impl) {
  assert(d.N >= 0 && d.out_h() >= 1 && d.out_w() >= 1);
  if (d.N == 0 || (dkernel == nullptr && dbias == nullptr)) return;
  std::shared_ptr<const Entry> e;
  if (!use_onednn(d, ConvOp::backward_weights, dbias != nullptr, impl, e)) {
    reference::conv2d_backward_weights(d, x, dy, dkernel, dbias);
    return;
  }
  // oneDNN assigns its gradients; the contract accumulates, so compute into temporaries
  // in the Keras layout and add them (the kernel is small next to x and dy).
  dnnl::stream& s = stream();
  std::vector<float> dk(static_cast<std::size_t>(d.kernel_size()));
  std::vector<float> db(dbias != nullptr ? static_cast<std::size_t>(d.Cout) : 0);
  memory dk_user = wrap(e->user_kernel, dk.data());
  memory dk_prim = e->reorder_kernel ? memory(e->prim_kernel, engine()) : dk_user;
  memory scratch(e->scratchpad, engine());
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, wrap(activation_md(d, d.H, d.W, d.Cin), x)},
      {DNNL_ARG_DIFF_DST, wrap(activation_md(d, d.out_h(), d.out_w(), d.Cout), dy)},
      {DNNL_ARG_DIFF_WEIGHTS, dk_prim},
      {DNNL_ARG_SCRATCHPAD, scratch}};
  if (dbias != nullptr) args.emplace(DNNL_ARG_DIFF_BIAS, wrap(bias_md(d), db.data()));
  e->prim.execute(s, args);
  if (e->reorder_kernel && dkernel != nullptr) e->kernel_reorder.execute(s, dk_prim, dk_user);
  s.wait();
  if (dkernel != nullptr) {
    for (std::size_t i = 0; i < dk.size(); ++i) dkernel[i] += dk[i];
  }
  if (dbias != nullptr) {
    for (std::size_t i = 0; i < db.size(); ++i) dbias[i] += db[i];
  }
}

}  // namespace bnorm::kernels
