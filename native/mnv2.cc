// Thin N-API layer over oneDNN 2.6 (v2 API). A Program is a list of primitive invocations over numbered
// buffers, compiled once (primitives and internal memory created up front) and run many times. All graph
// logic (which ops, in which order, which buffers) lives in TypeScript; this file only validates the
// request, creates the oneDNN objects and executes them.
#include <napi.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

using namespace dnnl;
using dims = memory::dims;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

struct Buffer {
  std::string layout;  // "act" | "plain" | "ws"
  dims shape;          // logical dims
  memory mem;          // created at compile time (ws: by the op that defines it)
  Napi::Reference<Napi::Float32Array> ref;  // keeps an external array alive
};

struct Step {
  primitive prim;
  std::unordered_map<int, memory> args;
  std::string name;
  std::function<void()> kernel = nullptr;  // one of this file's kernels instead of a oneDNN primitive
  std::string kernelImpl = "";             // its name in implementations()
};

// oneDNN 2.6 indexes some kernels with 32-bit integers: every tensor must have fewer than 2^31 elements.
constexpr int64_t kMaxElements = INT32_MAX;

[[noreturn]] void fail(const std::string &msg) { throw std::runtime_error(msg); }

// setNumThreads' value: OpenMP's thread count is per calling thread, so runAsync's worker threads apply it too.
std::atomic<int> gThreads{0};

std::string dimsStr(const dims &d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); i++) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

tag plainTag(size_t rank) {
  switch (rank) {
    case 1: return tag::a;
    case 2: return tag::ab;
    case 3: return tag::abc;
    case 4: return tag::abcd;
    case 5: return tag::abcde;
    default: fail("plain buffers must have rank 1..5, got " + std::to_string(rank));
  }
}

// ---- the addon's own kernels over activation layouts (see Program::geometry): rows of hw × block floats,
// row r holding channels (r % blocks)·block .. +block of image r / blocks. Built for AVX2 and the baseline ISA; the
// loader picks the one this CPU runs.
struct ActGeometry {
  int64_t n, c, hw, block, blocks;
};

// Eight floats as one value (GCC vector extension): SSE pairs in the baseline build, one AVX register in the AVX2 clone.
typedef float v8f __attribute__((vector_size(32)));
static inline v8f load8(const float *p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
static inline void store8(float *p, v8f v) { __builtin_memcpy(p, &v, sizeof v); }
static inline v8f splat8(float f) { return v8f{f, f, f, f, f, f, f, f}; }

// Adds one row's per-lane sums (NV vectors each) to a channel block's double totals: ds[0..8·NV) and ds[8·NV..).
template <int NV>
static inline void addRowSums(const v8f *sv, const v8f *qv, double *ds) {
  alignas(32) float s[8 * NV], q[8 * NV];
  for (int v = 0; v < NV; v++) {
    store8(s + 8 * v, sv[v]);
    store8(q + 8 * v, qv[v]);
  }
  for (int j = 0; j < 8 * NV; j++) {
    ds[j] += s[j];
    ds[8 * NV + j] += q[j];
  }
}

// Training BN + clip, forward, one channel block per iteration so that its second pass reads what the first just
// read (from cache when a block's N × hw × block floats fit). Per channel: the sums of x - k and (x - k)² (k: the
// channel's first value, against cancellation; float within a row, double across rows), the batch mean and biased
// variance into mu / sigma2 (unless global: then they are the frozen statistics), y = clip((x - mean)·γ/σ + β).
// Each block is one thread's, so the bits do not depend on the thread count. Channels ≥ C (padding) give 0.
template <int BS>
__attribute__((target_clones("avx2", "default"))) void bnClipForwardT(const float *__restrict x, float *__restrict y, ActGeometry g, float *mu, float *sigma2,
                                                                      const float *gamma, const float *beta, float eps, float clip, bool global) {
  constexpr int NV = BS / 8;
  const int64_t HW = g.hw;
  const double count = static_cast<double>(g.n * HW);
  const v8f zero = splat8(0.f), top = splat8(clip);
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < g.blocks; cb++) {
    alignas(32) float k[BS] = {}, m[BS] = {}, mul[BS] = {}, b[BS] = {};
    double ds[2 * BS] = {};
    const int64_t c0 = cb * BS, live = std::min<int64_t>(BS, g.c - c0);
    if (!global) {
      for (int64_t j = 0; j < live; j++) k[j] = x[cb * HW * BS + j];
      v8f kv[NV];
      for (int v = 0; v < NV; v++) kv[v] = load8(k + 8 * v);
      for (int64_t n = 0; n < g.n; n++) {
        const float *row = x + (n * g.blocks + cb) * HW * BS;
        v8f sv[NV], qv[NV];
        for (int v = 0; v < NV; v++) sv[v] = qv[v] = zero;
        for (int64_t p = 0; p < HW; p++)
          for (int v = 0; v < NV; v++) {
            const v8f d = load8(row + p * BS + 8 * v) - kv[v];
            sv[v] += d;
            qv[v] += d * d;
          }
        addRowSums<NV>(sv, qv, ds);
      }
      for (int64_t j = 0; j < live; j++) {
        const double d = ds[j] / count;
        mu[c0 + j] = static_cast<float>(k[j] + d);
        sigma2[c0 + j] = static_cast<float>(std::max(0.0, ds[BS + j] / count - d * d));
      }
    }
    for (int64_t j = 0; j < live; j++) {
      m[j] = mu[c0 + j];
      mul[j] = gamma[c0 + j] / std::sqrt(sigma2[c0 + j] + eps);
      b[j] = beta[c0 + j];
    }
    v8f mv[NV], fv[NV], bv[NV];
    for (int v = 0; v < NV; v++) mv[v] = load8(m + 8 * v), fv[v] = load8(mul + 8 * v), bv[v] = load8(b + 8 * v);
    for (int64_t n = 0; n < g.n; n++) {
      const int64_t base = (n * g.blocks + cb) * HW * BS;
      for (int64_t p = 0; p < HW; p++)
        for (int v = 0; v < NV; v++) {
          const int64_t i = base + p * BS + 8 * v;
          const v8f z = (load8(x + i) - mv[v]) * fv[v] + bv[v];
          store8(y + i, z < zero ? zero : (z > top ? top : z));  // NaN passes (both compares are false)
        }
    }
  }
}

// Training BN + clip, backward, by channel block as the forward: the clip's mask recomputed from x with the same
// expression (PyTorch: gradient where 0 < z < clip), dβ = Σ g, dγ = Σ g·x̂, dx = γ/σ · (g - dβ/M - x̂·dγ/M), or
// γ/σ · g with frozen (global) statistics.
template <int BS>
__attribute__((target_clones("avx2", "default"))) void bnClipBackwardT(const float *__restrict x, const float *__restrict dy, float *__restrict dx, ActGeometry g, const float *mu,
                                                                       const float *sigma2, const float *gamma, const float *beta, float eps, float clip, bool global,
                                                                       float *dgamma, float *dbeta) {
  constexpr int NV = BS / 8;
  const int64_t HW = g.hw;
  const double count = static_cast<double>(g.n * HW);
  const v8f zero = splat8(0.f), top = splat8(clip);
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < g.blocks; cb++) {
    alignas(32) float m[BS] = {}, iv[BS] = {}, mul[BS] = {}, b[BS] = {}, a[BS] = {}, coef[BS] = {};
    double ds[2 * BS] = {};
    const int64_t c0 = cb * BS, live = std::min<int64_t>(BS, g.c - c0);
    for (int64_t j = 0; j < live; j++) {
      m[j] = mu[c0 + j];
      iv[j] = 1.f / std::sqrt(sigma2[c0 + j] + eps);
      mul[j] = gamma[c0 + j] * iv[j];
      b[j] = beta[c0 + j];
    }
    v8f mv[NV], ivv[NV], fv[NV], bv[NV];
    for (int v = 0; v < NV; v++) mv[v] = load8(m + 8 * v), ivv[v] = load8(iv + 8 * v), fv[v] = load8(mul + 8 * v), bv[v] = load8(b + 8 * v);
    // The gradient through the clip at element i of lane group v.
    auto passed = [&](int64_t i, int v) {
      const v8f xv = load8(x + i), z = (xv - mv[v]) * fv[v] + bv[v];
      return (z > zero && z < top) ? load8(dy + i) : zero;
    };
    for (int64_t n = 0; n < g.n; n++) {
      const int64_t base = (n * g.blocks + cb) * HW * BS;
      v8f sv[NV], qv[NV];
      for (int v = 0; v < NV; v++) sv[v] = qv[v] = zero;
      for (int64_t p = 0; p < HW; p++)
        for (int v = 0; v < NV; v++) {
          const int64_t i = base + p * BS + 8 * v;
          const v8f gi = passed(i, v);
          sv[v] += gi;
          qv[v] += gi * ((load8(x + i) - mv[v]) * ivv[v]);
        }
      addRowSums<NV>(sv, qv, ds);
    }
    for (int64_t j = 0; j < live; j++) {
      dbeta[c0 + j] = static_cast<float>(ds[j]);
      dgamma[c0 + j] = static_cast<float>(ds[BS + j]);
      if (!global) {
        a[j] = static_cast<float>(ds[j] / count);
        coef[j] = static_cast<float>(ds[BS + j] / count) * iv[j];  // x̂·dγ/M = (x - m)·coef
      }
    }
    v8f av[NV], cv[NV];
    for (int v = 0; v < NV; v++) av[v] = load8(a + 8 * v), cv[v] = load8(coef + 8 * v);
    for (int64_t n = 0; n < g.n; n++) {
      const int64_t base = (n * g.blocks + cb) * HW * BS;
      for (int64_t p = 0; p < HW; p++)
        for (int v = 0; v < NV; v++) {
          const int64_t i = base + p * BS + 8 * v;
          store8(dx + i, fv[v] * (passed(i, v) - av[v] - (load8(x + i) - mv[v]) * cv[v]));
        }
    }
  }
}

// Runs f(std::integral_constant<int, B>) with the layout's block size (8 or 16) as a constant.
template <typename F>
void byBlock(int64_t block, F &&f) {
  if (block == 8) f(std::integral_constant<int, 8>());
  else f(std::integral_constant<int, 16>());
}

class Program : public Napi::ObjectWrap<Program> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Program",
                       {InstanceMethod("run", &Program::Run), InstanceMethod("runAsync", &Program::RunAsync),
                        InstanceMethod("implementations", &Program::Implementations),
                        InstanceMethod("weightsChanged", &Program::WeightsChanged), InstanceMethod("bytes", &Program::Bytes),
                        InstanceMethod("release", &Program::Release)});
  }

  Program(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Program>(info), eng_(engine::kind::cpu, 0), strm_(eng_) {
    Napi::Env env = info.Env();
    try {
      if (info.Length() != 1 || !info[0].IsObject()) fail("Program(spec): expected one spec object");
      Napi::Object spec = info[0].As<Napi::Object>();
      std::string fmt = str(spec, "actFormat");
      if (fmt == "nhwc") actTag_ = tag::nhwc;
      else if (fmt == "nChw16c") actTag_ = tag::nChw16c;
      else if (fmt == "nChw8c") actTag_ = tag::nChw8c;
      else if (fmt == "nchw") actTag_ = tag::nchw;
      else fail("actFormat must be nhwc, nChw16c, nChw8c or nchw, got " + fmt);
      cacheWeights_ = flag(spec, "cacheWeights");
      parseBuffers(arr(spec, "buffers"));
      Napi::Array segs = arr(spec, "segments");
      for (uint32_t s = 0; s < segs.Length(); s++) {
        Napi::Value sv = segs.Get(s);
        if (!sv.IsArray()) fail("segments[" + std::to_string(s) + "] must be an array of ops");
        Napi::Array ops = sv.As<Napi::Array>();
        segments_.emplace_back();
        for (uint32_t i = 0; i < ops.Length(); i++) {
          Napi::Value ov = ops.Get(i);
          if (!ov.IsObject()) fail("op " + std::to_string(i) + " of segment " + std::to_string(s) + " is not an object");
          curOp_ = "segment " + std::to_string(s) + " op " + std::to_string(i);
          compileOp(ov.As<Napi::Object>(), segments_.back());
        }
      }
    } catch (const dnnl::error &e) {
      Napi::Error::New(env, std::string("mnv2 native: oneDNN rejected ") + curOp_ + ": " + e.what()).ThrowAsJavaScriptException();
    } catch (const std::exception &e) {
      Napi::Error::New(env, std::string("mnv2 native: ") + (curOp_.empty() ? "" : curOp_ + ": ") + e.what()).ThrowAsJavaScriptException();
    }
  }

 private:
  engine eng_;
  stream strm_;
  tag actTag_ = tag::nhwc;
  std::vector<Buffer> bufs_;
  std::vector<memory> arenas_;  // the blocks shared arena members point into
  std::vector<std::vector<Step>> segments_;
  std::vector<Step> prep_;  // weight reorders when cacheWeights is set
  bool cacheWeights_ = false, prepDirty_ = true, released_ = false;
  bool busy_ = false;  // a runAsync() is in flight
  std::string curOp_;
  int64_t ownedBytes_ = 0;  // memory this program allocated (not the caller's arrays)

  memory owned(const memory::desc &md) {
    ownedBytes_ += static_cast<int64_t>(md.get_size());
    return memory(md, eng_);
  }

  // ---- spec parsing helpers (every access validated) ----
  static std::string str(const Napi::Object &o, const char *k) {
    Napi::Value v = o.Get(k);
    if (!v.IsString()) fail(std::string("field '") + k + "' must be a string");
    return v.As<Napi::String>().Utf8Value();
  }
  static Napi::Array arr(const Napi::Object &o, const char *k) {
    Napi::Value v = o.Get(k);
    if (!v.IsArray()) fail(std::string("field '") + k + "' must be an array");
    return v.As<Napi::Array>();
  }
  static int64_t integer(const Napi::Value &v, const std::string &what) {
    if (!v.IsNumber()) fail(what + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d)) || d < 0 || d > 1e12) fail(what + " must be a non-negative integer");
    return static_cast<int64_t>(d);
  }
  static int64_t num(const Napi::Object &o, const char *k) { return integer(o.Get(k), std::string("field '") + k + "'"); }
  static double real(const Napi::Object &o, const char *k) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) fail(std::string("field '") + k + "' must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  static bool flag(const Napi::Object &o, const char *k) {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined()) return false;
    if (!v.IsBoolean()) fail(std::string("field '") + k + "' must be a boolean");
    return v.As<Napi::Boolean>().Value();
  }
  // Elements of a tensor, multiplied in 64 bits with overflow checks; tensors of more than kMaxElements are
  // refused here, before oneDNN sees them, instead of crashing inside a kernel.
  static int64_t checkedCount(const dims &shape, const std::string &what) {
    int64_t count = 1;
    for (int64_t v : shape)
      if (v <= 0 || __builtin_mul_overflow(count, v, &count) || count > kMaxElements)
        fail(what + " " + dimsStr(shape) + " has 2^31 or more elements; the native engine (oneDNN 2.6, 32-bit indexing in some kernels) takes at most 2^31 - 1 per tensor");
    return count;
  }

  static dims pair(const Napi::Object &o, const char *k) {
    Napi::Array a = arr(o, k);
    if (a.Length() != 2) fail(std::string("field '") + k + "' must have 2 entries");
    return {integer(a.Get(0u), k), integer(a.Get(1u), k)};
  }

  void parseBuffers(const Napi::Array &list) {
    std::vector<std::vector<std::pair<uint32_t, memory::desc>>> arenas;  // arena -> (buffer, layout) members
    for (uint32_t i = 0; i < list.Length(); i++) {
      std::string what = "buffers[" + std::to_string(i) + "]";
      Napi::Value bv = list.Get(i);
      if (!bv.IsObject()) fail(what + " is not an object");
      Napi::Object b = bv.As<Napi::Object>();
      Buffer buf;
      buf.layout = str(b, "layout");
      if (buf.layout == "ws") {
        bufs_.push_back(std::move(buf));
        continue;
      }
      Napi::Array d = arr(b, "dims");
      for (uint32_t j = 0; j < d.Length(); j++) {
        int64_t v = integer(d.Get(j), what + ".dims");
        if (v <= 0) fail(what + ".dims entries must be positive");
        buf.shape.push_back(v);
      }
      int64_t count = checkedCount(buf.shape, what);
      memory::desc md;
      if (buf.layout == "act") {
        if (buf.shape.size() != 4) fail(what + ": act buffers must be 4-D, got " + dimsStr(buf.shape));
        md = memory::desc(buf.shape, dt::f32, actTag_);
      } else if (buf.layout == "plain") {
        md = memory::desc(buf.shape, dt::f32, plainTag(buf.shape.size()));
      } else {
        fail(what + ": layout must be act, plain or ws, got " + buf.layout);
      }
      Napi::Value data = b.Get("data");
      Napi::Value arena = b.Get("arena");
      if (!arena.IsUndefined()) {
        // A member of a shared arena (gradient buffers live at disjoint times): its memory is made below, once
        // every member's size is known. Blocked padding would carry another member's values, so none is allowed.
        if (buf.layout != "act" || !data.IsUndefined()) fail(what + ": only act buffers without data can share an arena");
        int64_t a = integer(arena, what + ".arena");
        if (a < 0 || a >= static_cast<int64_t>(list.Length())) fail(what + ".arena must be in [0, " + std::to_string(list.Length()) + ")");
        for (int j = 0; j < md.data.ndims; j++)
          if (md.data.padded_dims[j] != md.data.dims[j]) fail(what + " " + dimsStr(buf.shape) + " has padded channels in the activation layout and cannot share an arena");
        if (static_cast<size_t>(a) >= arenas.size()) arenas.resize(a + 1);
        arenas[a].push_back({i, md});
      } else if (data.IsUndefined()) {
        buf.mem = owned(md);
      } else {
        if (buf.layout != "plain") fail(what + ": only plain buffers can wrap external data");
        if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
          fail(what + ".data must be a Float32Array");
        Napi::Float32Array fa = data.As<Napi::Float32Array>();
        if (static_cast<int64_t>(fa.ElementLength()) != count)
          fail(what + ".data has " + std::to_string(fa.ElementLength()) + " elements, dims " + dimsStr(buf.shape) +
               " need " + std::to_string(count));
        buf.mem = memory(md, eng_, fa.Data());
        buf.ref = Napi::Persistent(fa);
      }
      bufs_.push_back(std::move(buf));
    }
    for (const auto &members : arenas) {
      if (members.empty()) continue;
      size_t bytes = 0;
      for (const auto &m : members) bytes = std::max(bytes, m.second.get_size());
      memory block = owned(memory::desc({static_cast<int64_t>(bytes)}, dt::u8, tag::a));
      for (const auto &m : members) bufs_[m.first].mem = memory(m.second, eng_, block.get_data_handle());
      arenas_.push_back(std::move(block));
    }
  }

  // A window of plain buffer `b`: element (i0, i1, ...) at offset + Σ i_k·strides[k]. Every element it
  // reaches is checked (64-bit, overflow-checked) to lie inside the buffer before oneDNN sees the pointer.
  memory view(const Napi::Object &o, const char *k, const Buffer &b) {
    std::string what = std::string("field '") + k + "'";
    Napi::Value vv = o.Get(k);
    if (!vv.IsObject()) fail(what + " must be an object {offset, dims, strides}");
    if (b.layout != "plain") fail(what + ": views are windows of plain buffers, this buffer is " + b.layout);
    Napi::Object v = vv.As<Napi::Object>();
    Napi::Array da = arr(v, "dims"), sa = arr(v, "strides");
    if (da.Length() < 1 || da.Length() > 5 || sa.Length() != da.Length()) fail(what + ": dims and strides must have the same rank, 1..5");
    dims d, st;
    for (uint32_t i = 0; i < da.Length(); i++) {
      d.push_back(integer(da.Get(i), what + ".dims"));
      st.push_back(integer(sa.Get(i), what + ".strides"));
      if (st.back() < 1) fail(what + ".strides entries must be positive");
    }
    checkedCount(d, what);
    int64_t offset = num(v, "offset"), last = offset;
    for (size_t i = 0; i < d.size(); i++) {
      int64_t reach;
      if (__builtin_mul_overflow(d[i] - 1, st[i], &reach) || __builtin_add_overflow(last, reach, &last)) fail(what + ": strides overflow");
    }
    int64_t count = checkedCount(b.shape, what + " buffer");
    if (last >= count)
      fail(what + " " + dimsStr(d) + " strides " + dimsStr(st) + " at offset " + std::to_string(offset) + " reaches element " +
           std::to_string(last) + " of a buffer of " + std::to_string(count));
    return memory(memory::desc(d, dt::f32, st), eng_, static_cast<float *>(b.mem.get_data_handle()) + offset);
  }

  Buffer &buf(const Napi::Object &o, const char *k, const char *layout = nullptr) {
    int64_t id = num(o, k);
    if (id >= static_cast<int64_t>(bufs_.size())) fail(std::string("field '") + k + "' refers to buffer " + std::to_string(id) + " of " + std::to_string(bufs_.size()));
    Buffer &b = bufs_[id];
    if (layout && b.layout != layout) fail(std::string("field '") + k + "' must be a " + layout + " buffer, buffer " + std::to_string(id) + " is " + b.layout);
    if (b.layout != "ws" && !b.mem) fail(std::string("buffer ") + std::to_string(id) + " has no memory");
    return b;
  }
  bool has(const Napi::Object &o, const char *k) { return !o.Get(k).IsUndefined() && !o.Get(k).IsNull(); }

  static void expectDims(const Buffer &b, const dims &want, const std::string &what) {
    if (b.shape != want) fail(what + " has dims " + dimsStr(b.shape) + ", expected " + dimsStr(want));
  }

  // A memory in the layout `want`; adds a reorder step from/to the user's memory when layouts differ.
  // Weights reordered once are shared: the backward-data op reuses the layout the forward op made (segments
  // run in order, and weights only change between runs of the whole program).
  memory adapt(memory user, const memory::desc &want, std::vector<Step> &seg, bool toWant, const std::string &name) {
    if (user.get_desc() == want) return user;
    if (toWant) {
      for (auto &r : reordered_)
        if (r.handle == user.get_data_handle() && r.src == user.get_desc() && r.mem.get_desc() == want) return r.mem;
    }
    memory internal = owned(want);
    if (toWant) {
      // With cached weights (inference), weight layouts are made once per weights change, not per run.
      (cacheWeights_ ? prep_ : seg).push_back({reorder(user, internal), {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, internal}}, name + ".reorder"});
      reordered_.push_back({user.get_data_handle(), user.get_desc(), internal});
    } else {
      pendingOut_.push_back({reorder(internal, user), {{DNNL_ARG_FROM, internal}, {DNNL_ARG_TO, user}}, name + ".reorder"});
    }
    return internal;
  }
  struct Reordered {
    void *handle;
    memory::desc src;
    memory mem;
  };
  std::vector<Reordered> reordered_;
  std::vector<Step> pendingOut_;
  void flushOut(std::vector<Step> &seg) {
    for (auto &s : pendingOut_) seg.push_back(std::move(s));
    pendingOut_.clear();
  }

  struct ConvGeom {
    dims src, wei, dst, strides, padL, padR;
    memory::desc srcMd, dstMd;  // the buffers' own layouts (act, or plain NCHW for the network input)
    int64_t groups;
    memory::desc weiUser;  // plain OIHW, or GOIHW for groups > 1
  };

  // `dst` null: the conv's own output is internal (a depthwise post-op consumes it); its layout is the act one.
  ConvGeom convGeom(const Napi::Object &o, const Buffer &src, const Buffer &wei, const Buffer *dst) {
    ConvGeom g;
    g.strides = pair(o, "stride");
    g.padL = pair(o, "padL");
    g.padR = pair(o, "padR");
    g.groups = num(o, "groups");
    if (src.shape.size() != 4 || (dst && dst->shape.size() != 4) || wei.shape.size() != 4) fail("conv buffers must be 4-D");
    int64_t n = src.shape[0], ic = src.shape[1], h = src.shape[2], w = src.shape[3];
    int64_t oc = wei.shape[0], kh = wei.shape[2], kw = wei.shape[3];
    if (g.groups < 1 || ic % g.groups || oc % g.groups) fail("groups " + std::to_string(g.groups) + " must divide channels " + std::to_string(ic) + " -> " + std::to_string(oc));
    if (wei.shape[1] != ic / g.groups) fail("weights " + dimsStr(wei.shape) + " do not match input channels " + std::to_string(ic) + " / groups " + std::to_string(g.groups));
    if (g.strides[0] < 1 || g.strides[1] < 1) fail("strides must be >= 1");
    // Each term is at most 1e12 (integer()), so these sums cannot overflow 64 bits.
    if (h + g.padL[0] + g.padR[0] < kh || w + g.padL[1] + g.padR[1] < kw) fail("kernel larger than padded input");
    int64_t oh = (h + g.padL[0] + g.padR[0] - kh) / g.strides[0] + 1;
    int64_t ow = (w + g.padL[1] + g.padR[1] - kw) / g.strides[1] + 1;
    g.src = src.shape;
    g.dst = {n, oc, oh, ow};
    checkedCount(g.dst, "conv output");
    g.srcMd = src.mem.get_desc();
    if (dst) {
      expectDims(*dst, g.dst, "conv output");
      g.dstMd = dst->mem.get_desc();
    } else {
      g.dstMd = memory::desc(g.dst, dt::f32, actTag_);
    }
    if (g.groups == 1) {
      g.wei = wei.shape;
      g.weiUser = memory::desc(g.wei, dt::f32, tag::oihw);
    } else {
      g.wei = {g.groups, oc / g.groups, ic / g.groups, kh, kw};
      g.weiUser = memory::desc(g.wei, dt::f32, tag::goihw);
    }
    return g;
  }

  convolution_forward::primitive_desc convFwdPd(const ConvGeom &g, bool train, bool bias, const primitive_attr &attr = primitive_attr()) {
    const memory::desc &srcMd = g.srcMd, &dstMd = g.dstMd;
    memory::desc weiMd(g.wei, dt::f32, tag::any);
    prop_kind pk = train ? prop_kind::forward_training : prop_kind::forward_inference;
    if (bias) {
      memory::desc biasMd({g.dst[1]}, dt::f32, tag::a);
      return {{pk, algorithm::convolution_direct, srcMd, weiMd, biasMd, dstMd, g.strides, g.padL, g.padR}, attr, eng_};
    }
    return {{pk, algorithm::convolution_direct, srcMd, weiMd, dstMd, g.strides, g.padL, g.padR}, attr, eng_};
  }

  static algorithm eltAlg(const std::string &kind, float &alpha, float &beta, bool useDst) {
    alpha = 0.f;
    beta = 0.f;
    if (kind == "relu") return useDst ? algorithm::eltwise_relu_use_dst_for_bwd : algorithm::eltwise_relu;
    if (kind == "relu6") {
      beta = 6.f;
      return useDst ? algorithm::eltwise_clip_v2_use_dst_for_bwd : algorithm::eltwise_clip_v2;
    }
    if (kind == "sigmoid") return useDst ? algorithm::eltwise_logistic_use_dst_for_bwd : algorithm::eltwise_logistic;
    fail("activation must be relu, relu6 or sigmoid, got " + kind);
  }

  void compileOp(const Napi::Object &o, std::vector<Step> &seg) {
    std::string op = str(o, "op");
    std::string name = o.Get("name").IsString() ? str(o, "name") : op;
    curOp_ += " (" + op + " " + name + ")";

    if (op == "reorder") {
      // Either side may be a strided window of a plain buffer (srcView / dstView): layout changes such as a
      // detection head's [C, H, W] -> [H·W·A, k] slice of a concatenated output are one reorder.
      memory src = has(o, "srcView") ? view(o, "srcView", buf(o, "src")) : buf(o, "src").mem;
      memory dst = has(o, "dstView") ? view(o, "dstView", buf(o, "dst")) : buf(o, "dst").mem;
      dims sd = src.get_desc().dims(), dd = dst.get_desc().dims();
      if (sd != dd) fail("reorder between dims " + dimsStr(sd) + " and " + dimsStr(dd));
      seg.push_back({reorder(src, dst), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}}, name});
    } else if (op == "conv") {
      // The source may be plain NCHW: the stem reads the network input without a reorder.
      // A depthwise post-op (oneDNN's 1x1 + 3x3-depthwise fusion) makes dst the depthwise conv's output;
      // the 1x1 output then never leaves the cache.
      Napi::Array posts = has(o, "post") ? arr(o, "post") : Napi::Array::New(o.Env());
      const Buffer *dwWei = nullptr, *dwBias = nullptr;
      for (uint32_t i = 0; i < posts.Length(); i++) {
        Napi::Value pv = posts.Get(i);
        if (!pv.IsObject()) fail("post-op entries must be objects");
        Napi::Object p = pv.As<Napi::Object>();
        if (str(p, "kind") != "dw") continue;
        if (dwWei) fail("at most one depthwise post-op");
        dwWei = &buf(p, "wei", "plain");
        dwBias = &buf(p, "bias", "plain");
      }
      Buffer &src = buf(o, "src"), &wei = buf(o, "wei", "plain"), &dst = buf(o, "dst", "act");
      ConvGeom g = convGeom(o, src, wei, dwWei ? nullptr : &dst);
      bool bias = has(o, "bias");
      post_ops po;
      std::vector<std::pair<int, memory>> postArgs;
      dims dwDst;
      for (uint32_t i = 0; i < posts.Length(); i++) {
        Napi::Object p = posts.Get(i).As<Napi::Object>();
        std::string kind = str(p, "kind");
        if (kind == "dw") {
          if (g.groups != 1 || g.wei[2] != 1 || g.wei[3] != 1 || g.strides != dims{1, 1} || g.padL != dims{0, 0} || g.padR != dims{0, 0})
            fail("a depthwise post-op needs a 1x1, stride-1, unpadded conv");
          int64_t c = g.dst[1], s = num(p, "stride"), pad = num(p, "pad");
          // oneDNN's fused depthwise conv is 'same'-shaped: ceil(in / stride) outputs, extra padding after.
          if (!((s == 1 && pad == 1) || (s == 2 && pad <= 1))) fail("depthwise post-op: stride 1 needs pad 1, stride 2 pad 0 or 1");
          expectDims(*dwWei, {c, 1, 3, 3}, "depthwise post-op weights");
          expectDims(*dwBias, {c}, "depthwise post-op bias");
          dwDst = {g.dst[0], c, (g.dst[2] + s - 1) / s, (g.dst[3] + s - 1) / s};
          expectDims(dst, dwDst, "depthwise post-op output");
          po.append_dw(dt::f32, dt::f32, dt::f32, 3, s, pad, 0, {1.f});
        } else if (kind == "add") {
          if (!dwDst.empty()) fail("a binary post-op cannot follow a depthwise post-op");
          Buffer &other = buf(p, "src", "act");
          expectDims(other, g.dst, "post-op add operand");
          po.append_binary(algorithm::binary_add, other.mem.get_desc());
          postArgs.push_back({DNNL_ARG_ATTR_MULTIPLE_POST_OP(static_cast<int>(i)) | DNNL_ARG_SRC_1, other.mem});
        } else {
          float a, b;
          algorithm alg = eltAlg(kind, a, b, false);
          po.append_eltwise(1.f, alg, a, b);
        }
      }
      primitive_attr attr;
      attr.set_post_ops(po);
      auto pd = convFwdPd(g, flag(o, "train"), bias, attr);
      memory w = adapt(memory(g.weiUser, eng_, wei.mem.get_data_handle()), pd.weights_desc(), seg, true, name);
      Step s{convolution_forward(pd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst.mem}}, name};
      if (dwWei) {
        if (pd.dst_desc() != dst.mem.get_desc()) fail("oneDNN chose a depthwise post-op output layout other than the activation layout");
        const int dwArg = DNNL_ARG_ATTR_POST_OP_DW;
        memory::desc dwUser({dwDst[1], 1, 1, 3, 3}, dt::f32, tag::goihw);
        s.args[dwArg | DNNL_ARG_WEIGHTS] = adapt(memory(dwUser, eng_, dwWei->mem.get_data_handle()),
                                                  pd.query_md(query::exec_arg_md, dwArg | DNNL_ARG_WEIGHTS), seg, true, name + ".dw");
        s.args[dwArg | DNNL_ARG_BIAS] = adapt(dwBias->mem, pd.query_md(query::exec_arg_md, dwArg | DNNL_ARG_BIAS), seg, true, name + ".dw_bias");
      }
      if (bias) {
        Buffer &b = buf(o, "bias", "plain");
        expectDims(b, {g.dst[1]}, "conv bias");
        s.args[DNNL_ARG_BIAS] = b.mem;
      }
      for (auto &pa : postArgs) s.args[pa.first] = pa.second;
      seg.push_back(std::move(s));
    } else if (op == "conv_bwd_data") {
      Buffer &dd = buf(o, "diff_dst", "act"), &wei = buf(o, "wei", "plain"), &ds = buf(o, "diff_src");
      ConvGeom g = convGeom(o, ds, wei, &dd);
      auto hint = convFwdPd(g, true, false);
      memory::desc dsMd = g.srcMd, ddMd = g.dstMd, weiMd(g.wei, dt::f32, tag::any);
      convolution_backward_data::primitive_desc pd({algorithm::convolution_direct, dsMd, weiMd, ddMd, g.strides, g.padL, g.padR}, eng_, hint);
      memory w = adapt(memory(g.weiUser, eng_, wei.mem.get_data_handle()), pd.weights_desc(), seg, true, name);
      seg.push_back({convolution_backward_data(pd), {{DNNL_ARG_DIFF_DST, dd.mem}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, ds.mem}}, name});
    } else if (op == "conv_bwd_weights") {
      Buffer &src = buf(o, "src"), &dd = buf(o, "diff_dst", "act"), &dw = buf(o, "diff_wei", "plain");
      ConvGeom g = convGeom(o, src, dw, &dd);
      bool bias = has(o, "diff_bias");
      auto hint = convFwdPd(g, true, bias);
      memory::desc srcMd = g.srcMd, ddMd = g.dstMd, weiMd(g.wei, dt::f32, tag::any);
      convolution_backward_weights::desc d = bias
          ? convolution_backward_weights::desc(algorithm::convolution_direct, srcMd, weiMd, memory::desc({g.dst[1]}, dt::f32, tag::a), ddMd, g.strides, g.padL, g.padR)
          : convolution_backward_weights::desc(algorithm::convolution_direct, srcMd, weiMd, ddMd, g.strides, g.padL, g.padR);
      convolution_backward_weights::primitive_desc pd(d, eng_, hint);
      memory userW(g.weiUser, eng_, dw.mem.get_data_handle());
      memory w = adapt(userW, pd.diff_weights_desc(), seg, false, name);
      Step s{convolution_backward_weights(pd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DIFF_DST, dd.mem}, {DNNL_ARG_DIFF_WEIGHTS, w}}, name};
      if (bias) {
        Buffer &db = buf(o, "diff_bias", "plain");
        expectDims(db, {g.dst[1]}, "conv diff_bias");
        s.args[DNNL_ARG_DIFF_BIAS] = db.mem;
      }
      seg.push_back(std::move(s));
      flushOut(seg);
    } else if (op == "bn" || op == "bn_bwd") {
      compileBatchNorm(o, seg, op == "bn_bwd", name);
    } else if (op == "eltwise") {
      Buffer &src = buf(o, "src"), &dst = buf(o, "dst");
      if (src.shape != dst.shape || src.layout != dst.layout) fail("eltwise src and dst differ");
      float a, b;
      algorithm alg = eltAlg(str(o, "kind"), a, b, flag(o, "useDst"));
      prop_kind pk = flag(o, "train") ? prop_kind::forward_training : prop_kind::forward_inference;
      eltwise_forward::primitive_desc pd({pk, alg, src.mem.get_desc(), a, b}, eng_);
      seg.push_back({eltwise_forward(pd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}}, name});
    } else if (op == "eltwise_bwd") {
      // `data` is the forward src, or the forward dst when useDst is set.
      Buffer &data = buf(o, "data"), &dd = buf(o, "diff_dst"), &ds = buf(o, "diff_src");
      if (data.shape != dd.shape || dd.shape != ds.shape) fail("eltwise_bwd buffers differ in dims");
      float a, b;
      bool useDst = flag(o, "useDst");
      algorithm alg = eltAlg(str(o, "kind"), a, b, useDst);
      eltwise_forward::primitive_desc hint({prop_kind::forward_training, alg, data.mem.get_desc(), a, b}, eng_);
      eltwise_backward::primitive_desc pd({alg, dd.mem.get_desc(), data.mem.get_desc(), a, b}, eng_, hint);
      seg.push_back({eltwise_backward(pd), {{useDst ? DNNL_ARG_DST : DNNL_ARG_SRC, data.mem}, {DNNL_ARG_DIFF_DST, dd.mem}, {DNNL_ARG_DIFF_SRC, ds.mem}}, name});
    } else if (op == "add" || op == "mul") {
      Buffer &a = buf(o, "a"), &b = buf(o, "b"), &dst = buf(o, "dst");
      if (a.shape != dst.shape || b.shape != dst.shape) fail(op + " operands must have equal dims, got " + dimsStr(a.shape) + ", " + dimsStr(b.shape) + " -> " + dimsStr(dst.shape));
      binary::primitive_desc pd({op == "add" ? algorithm::binary_add : algorithm::binary_mul, a.mem.get_desc(), b.mem.get_desc(), dst.mem.get_desc()}, eng_);
      seg.push_back({binary(pd), {{DNNL_ARG_SRC_0, a.mem}, {DNNL_ARG_SRC_1, b.mem}, {DNNL_ARG_DST, dst.mem}}, name});
    } else if (op == "pool" || op == "pool_bwd") {
      bool bwd = op == "pool_bwd";
      Buffer &src = buf(o, bwd ? "diff_src" : "src", "act"), &dst = buf(o, bwd ? "diff_dst" : "dst", "act");
      if (src.shape.size() != 4 || dst.shape != dims{src.shape[0], src.shape[1], 1, 1}) fail("global pooling from " + dimsStr(src.shape) + " to " + dimsStr(dst.shape));
      dims kernel{src.shape[2], src.shape[3]}, zero{0, 0};
      // Global max pooling (a feature extractor's pooling: 'max') runs forward only: its backward needs a workspace.
      bool max = flag(o, "max");
      if (max && bwd) fail("global max pooling has no backward in the native engine");
      pooling_forward::primitive_desc fpd({max ? prop_kind::forward_inference : prop_kind::forward_training, max ? algorithm::pooling_max : algorithm::pooling_avg_exclude_padding,
                                           src.mem.get_desc(), dst.mem.get_desc(), kernel, kernel, zero, zero}, eng_);
      if (!bwd) {
        seg.push_back({pooling_forward(fpd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}}, name});
      } else {
        pooling_backward::primitive_desc pd({algorithm::pooling_avg_exclude_padding, src.mem.get_desc(), dst.mem.get_desc(), kernel, kernel, zero, zero}, eng_, fpd);
        seg.push_back({pooling_backward(pd), {{DNNL_ARG_DIFF_DST, dst.mem}, {DNNL_ARG_DIFF_SRC, src.mem}}, name});
      }
    } else if (op == "ip" || op == "ip_bwd_data" || op == "ip_bwd_weights") {
      compileInnerProduct(o, seg, op, name);
    } else if (op == "fake_quant" || op == "fake_quant_bwd") {
      compileFakeQuant(o, seg, op == "fake_quant_bwd", name);
    } else {
      fail("unknown op '" + op + "'");
    }
  }

  void compileBatchNorm(const Napi::Object &o, std::vector<Step> &seg, bool bwd, const std::string &name) {
    Buffer &src = buf(o, "src", "act");
    int64_t c = src.shape[1];
    Buffer &scale = buf(o, "scale", "plain"), &shift = buf(o, "shift", "plain"), &mean = buf(o, "mean", "plain"), &var = buf(o, "var", "plain");
    for (Buffer *b : {&scale, &shift, &mean, &var}) expectDims(*b, {c}, "batch-norm statistics/parameters");
    // globalStats with train: frozen statistics (quantization-aware training's last epochs): the running
    // mean/var normalize, and the backward treats them as constants.
    bool train = flag(o, "train"), relu = flag(o, "relu"), global = !train || flag(o, "globalStats");
    float eps = static_cast<float>(real(o, "eps"));
    if (!(eps > 0)) fail("eps must be positive");
    if (!o.Get("clip").IsUndefined()) {
      if (relu || !train) fail("clip is a training BN's own activation: not with relu, not in inference");
      compileBnClip(o, seg, bwd, name, src, scale, shift, mean, var, eps, global);
      return;
    }
    auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
    if (global) flags |= normalization_flags::use_global_stats;
    if (relu) flags |= normalization_flags::fuse_norm_relu;
    const memory::desc &md = src.mem.get_desc();
    batch_normalization_forward::primitive_desc fpd({train ? prop_kind::forward_training : prop_kind::forward_inference, md, eps, flags}, eng_);
    Buffer *ws = nullptr;
    if (relu && train) {
      ws = &buf(o, "ws", "ws");
      if (!bwd && !ws->mem) ws->mem = owned(fpd.workspace_desc());
      if (!ws->mem) fail("batch-norm workspace used before the forward op that fills it");
    }
    if (!bwd) {
      Buffer &dst = buf(o, "dst", "act");
      expectDims(dst, src.shape, "batch-norm output");
      Step s{batch_normalization_forward(fpd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, dst.mem}, {DNNL_ARG_SCALE, scale.mem}, {DNNL_ARG_SHIFT, shift.mem}, {DNNL_ARG_MEAN, mean.mem}, {DNNL_ARG_VARIANCE, var.mem}}, name};
      if (ws) s.args[DNNL_ARG_WORKSPACE] = ws->mem;
      seg.push_back(std::move(s));
      return;
    }
    if (!train) fail("bn_bwd needs train: true");
    Buffer &dd = buf(o, "diff_dst", "act"), &ds = buf(o, "diff_src", "act"), &dsc = buf(o, "diff_scale", "plain"), &dsh = buf(o, "diff_shift", "plain");
    expectDims(dd, src.shape, "batch-norm diff_dst");
    expectDims(ds, src.shape, "batch-norm diff_src");
    expectDims(dsc, {c}, "batch-norm diff_scale");
    expectDims(dsh, {c}, "batch-norm diff_shift");
    batch_normalization_backward::primitive_desc pd({prop_kind::backward, md, md, eps, flags}, eng_, fpd);
    Step s{batch_normalization_backward(pd), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DIFF_DST, dd.mem}, {DNNL_ARG_MEAN, mean.mem}, {DNNL_ARG_VARIANCE, var.mem}, {DNNL_ARG_SCALE, scale.mem}, {DNNL_ARG_SHIFT, shift.mem}, {DNNL_ARG_DIFF_SRC, ds.mem}, {DNNL_ARG_DIFF_SCALE, dsc.mem}, {DNNL_ARG_DIFF_SHIFT, dsh.mem}}, name};
    if (ws) s.args[DNNL_ARG_WORKSPACE] = ws->mem;
    seg.push_back(std::move(s));
  }

  // Where an act buffer's elements are: element (n, channel cb·block + k, pixel p) at ((n·blocks + cb)·hw + p)·block + k.
  // nChw8c / nChw16c: block 8 / 16; nhwc: one block of all C channels; nchw: C blocks of 1. Channels ≥ C are padding.
  ActGeometry geometry(const Buffer &b) const {
    const int64_t c = b.shape[1];
    ActGeometry g{b.shape[0], c, b.shape[2] * b.shape[3], 1, c};
    if (actTag_ == tag::nChw8c || actTag_ == tag::nChw16c) {
      g.block = actTag_ == tag::nChw8c ? 8 : 16;
      g.blocks = (c + g.block - 1) / g.block;
    } else if (actTag_ == tag::nhwc) {
      g.block = c;
      g.blocks = 1;
    }
    const int64_t elements = checkedCount({g.n, g.blocks * g.block, b.shape[2], b.shape[3]}, "activation");
    if (static_cast<size_t>(elements) * sizeof(float) != b.mem.get_desc().get_size()) fail("activation " + dimsStr(b.shape) + ": its layout's size is not the one assumed");
    return g;
  }

  // Training batch norm followed by a clip to [0, clip] (ReLU6), in one kernel each way, where oneDNN 2.6 fuses
  // only ReLU (fuse_norm_relu) and would run the clip as two more passes over the tensor (eltwise forward and
  // backward). Forward: per-channel sums of x - k and (x - k)² in one pass (k: the channel's first value, against
  // cancellation; float within a row of one channel block, double across rows), the batch mean and biased variance
  // written to mean / var as oneDNN's BN does, then y = clip((x - mean)·γ/σ + β). Backward: the clip's mask is
  // recomputed from x with the same expression (PyTorch: gradient where 0 < z < clip), no workspace; dβ = Σ g,
  // dγ = Σ g·x̂, dx = γ/σ · (g - dβ/M - x̂·dγ/M), or γ/σ · g with frozen (global) statistics. Channels beyond C
  // (blocked padding) get zero factors, so they stay zero without a branch.
  void compileBnClip(const Napi::Object &o, std::vector<Step> &seg, bool bwd, const std::string &name, Buffer &src, Buffer &scale, Buffer &shift,
                     Buffer &mean, Buffer &var, float eps, bool global) {
    const float clip = static_cast<float>(real(o, "clip"));
    if (!(clip > 0) || !std::isfinite(clip)) fail("clip must be a positive number");
    const ActGeometry g = geometry(src);
    if (g.block != 8 && g.block != 16) fail("clip: the BN + clip kernel runs on the blocked activation layouts (nChw8c, nChw16c), not this program's");
    const float *x = static_cast<const float *>(src.mem.get_data_handle());
    const float *gamma = static_cast<const float *>(scale.mem.get_data_handle()), *beta = static_cast<const float *>(shift.mem.get_data_handle());
    float *mu = static_cast<float *>(mean.mem.get_data_handle()), *sigma2 = static_cast<float *>(var.mem.get_data_handle());
    if (!bwd) {
      Buffer &dst = buf(o, "dst", "act");
      expectDims(dst, src.shape, "batch-norm output");
      float *y = static_cast<float *>(dst.mem.get_data_handle());
      seg.push_back({primitive(), {}, name, [=] {
        byBlock(g.block, [&](auto bs) { bnClipForwardT<decltype(bs)::value>(x, y, g, mu, sigma2, gamma, beta, eps, clip, global); });
      }, "mnv2:bn_clip"});
      return;
    }
    Buffer &dd = buf(o, "diff_dst", "act"), &ds = buf(o, "diff_src", "act"), &dsc = buf(o, "diff_scale", "plain"), &dsh = buf(o, "diff_shift", "plain");
    expectDims(dd, src.shape, "batch-norm diff_dst");
    expectDims(ds, src.shape, "batch-norm diff_src");
    expectDims(dsc, {g.c}, "batch-norm diff_scale");
    expectDims(dsh, {g.c}, "batch-norm diff_shift");
    const float *dy = static_cast<const float *>(dd.mem.get_data_handle());
    float *dx = static_cast<float *>(ds.mem.get_data_handle()), *dgamma = static_cast<float *>(dsc.mem.get_data_handle()), *dbeta = static_cast<float *>(dsh.mem.get_data_handle());
    seg.push_back({primitive(), {}, name, [=] {
      byBlock(g.block, [&](auto bs) { bnClipBackwardT<decltype(bs)::value>(x, dy, dx, g, mu, sigma2, gamma, beta, eps, clip, global, dgamma, dbeta); });
    }, "mnv2:bn_clip"});
  }

  // Fake quantization of an activation, per tensor to uint8 (quantization-aware training), with PyTorch's
  // semantics: a MovingAverageMinMaxObserver first folds the tensor's min/max into `state` (state[2] is the
  // averaging constant; 0 leaves the range as it is), then q = clamp(nearbyint(x / scale) + zp, qmin, qmax) and
  // the output is (q - zp) · scale (torch.fake_quantize_per_tensor_affine; x / scale as x · (1 / scale)). The
  // scale and zero point are those of src/quant/quantize.ts activationParams over [min(0, lo), max(0, hi)],
  // written to state[3], state[4]. The workspace keeps the straight-through mask (q inside [qmin, qmax]) that
  // fake_quant_bwd multiplies the gradient by. src and dst may be the same buffer.
  void compileFakeQuant(const Napi::Object &o, std::vector<Step> &seg, bool bwd, const std::string &name) {
    Buffer &x = buf(o, bwd ? "diff_dst" : "src"), &y = buf(o, bwd ? "diff_src" : "dst"), &ws = buf(o, "ws", "ws");
    if (x.layout == "ws" || x.layout != y.layout || x.shape != y.shape || x.mem.get_desc() != y.mem.get_desc())
      fail("fake quantization: src " + dimsStr(x.shape) + " " + x.layout + " and dst " + dimsStr(y.shape) + " " + y.layout + " must have the same dims and layout");
    checkedCount(x.shape, "fake quantization tensor");
    // Every physical element (a blocked layout's channel padding included: it holds zeros, which stay zeros).
    const int64_t count = static_cast<int64_t>(x.mem.get_desc().get_size() / sizeof(float));
    float *src = static_cast<float *>(x.mem.get_data_handle()), *dst = static_cast<float *>(y.mem.get_data_handle());
    if (bwd) {
      if (!ws.mem || ws.mem.get_desc().get_size() != static_cast<size_t>(count)) fail("fake_quant_bwd needs the workspace of a fake_quant of the same tensor, compiled before it");
      const uint8_t *mask = static_cast<const uint8_t *>(ws.mem.get_data_handle());
      seg.push_back({primitive(), {}, name, [=] {
#pragma omp parallel for
        for (int64_t i = 0; i < count; i++) dst[i] = src[i] * static_cast<float>(mask[i]);  // torch: grad · mask
      }, "mnv2:fake_quant"});
      return;
    }
    if (ws.mem) fail("fake quantization workspace already used by another fake_quant");
    ws.mem = owned(memory::desc({count}, dt::u8, tag::a));
    uint8_t *mask = static_cast<uint8_t *>(ws.mem.get_data_handle());
    Buffer &st = buf(o, "state", "plain");
    expectDims(st, {5}, "fake quantization state [min, max, averaging constant, scale, zero point]");
    float *state = static_cast<float *>(st.mem.get_data_handle());
    const int64_t qmin = num(o, "qmin"), qmax = num(o, "qmax");
    if (qmin != 0 || qmax < 1 || qmax > 255) fail("fake quantization: uint8 range [qmin, qmax] must have qmin 0 and qmax in 1..255");
    // Channels of a blocked act layout (nChw8c / nChw16c) beyond C are padding, left out of the observed range.
    int64_t block = 1, channels = 1, spatial = 1;
    if (x.layout == "act" && (actTag_ == tag::nChw8c || actTag_ == tag::nChw16c)) {
      block = actTag_ == tag::nChw8c ? 8 : 16;
      channels = x.shape[1];
      spatial = x.shape[2] * x.shape[3];
    }
    const bool padded = block > 1 && channels % block != 0;
    const int64_t blocks = (channels + block - 1) / block;
    seg.push_back({primitive(), {}, name, [=] {
      const float c = state[2];
      if (c != 0.f) {
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
#pragma omp parallel for reduction(min : lo) reduction(max : hi)
        for (int64_t i = 0; i < count; i++) {
          if (padded && ((i / (spatial * block)) % blocks) * block + i % block >= channels) continue;
          lo = std::min(lo, src[i]);
          hi = std::max(hi, src[i]);
        }
        if (!std::isfinite(lo) || !std::isfinite(hi)) throw std::runtime_error(name + ": fake quantization of a tensor with non-finite values");
        if (std::isinf(state[0])) {
          state[0] = lo;
          state[1] = hi;
        } else {
          state[0] = state[0] + c * (lo - state[0]);
          state[1] = state[1] + c * (hi - state[1]);
        }
      }
      if (!(state[0] <= state[1])) throw std::runtime_error(name + ": fake quantization before any range was observed");
      // activationParams (src/quant/quantize.ts), in the same double arithmetic: the export's scales are these.
      const double lo = std::min(0.0, static_cast<double>(state[0])), hi = std::max(0.0, static_cast<double>(state[1]));
      float scale = 1.f / 255.f;
      double zp = 0;
      if (hi != lo) {
        scale = static_cast<float>((hi - lo) / qmax);
        const double v = -lo / scale;
        zp = std::floor(v);
        if (v - zp >= 0.5) zp += 1;  // JavaScript's Math.round
        zp = std::min<double>(qmax, std::max(0.0, zp));
      }
      state[3] = scale;
      state[4] = static_cast<float>(zp);
      const float inv = 1.f / scale, z = static_cast<float>(zp), top = static_cast<float>(qmax);
#pragma omp parallel for
      for (int64_t i = 0; i < count; i++) {
        const float q = z + std::nearbyint(src[i] * inv);
        mask[i] = q >= 0.f && q <= top;
        dst[i] = (std::fmin(std::fmax(q, 0.f), top) - z) * scale;
      }
    }, "mnv2:fake_quant"});
  }

  // Inner product with 4-D [N, C, 1, 1] activations, weights [O, C, 1, 1] (plain; the bytes of PyTorch's [O, C]).
  // The output (or its gradient) is plain [N, O], or an act [N, O, 1, 1] buffer (a hidden layer of a head that
  // the next ops read as an activation), reached through a plain [N, O] copy.
  void compileInnerProduct(const Napi::Object &o, std::vector<Step> &seg, const std::string &op, const std::string &name) {
    bool bwdData = op == "ip_bwd_data", bwdW = op == "ip_bwd_weights";
    Buffer &x = buf(o, bwdData ? "diff_src" : "src", "act");
    Buffer &w = buf(o, bwdW ? "diff_wei" : "wei", "plain");
    Buffer &yb = buf(o, op == "ip" ? "dst" : "diff_dst");
    if (x.shape.size() != 4 || x.shape[2] != 1 || x.shape[3] != 1) fail("inner product input must be [N, C, 1, 1], got " + dimsStr(x.shape));
    int64_t n = x.shape[0], c = x.shape[1];
    if (w.shape.size() != 4 || w.shape[1] != c || w.shape[2] != 1 || w.shape[3] != 1) fail("inner product weights must be [O, " + std::to_string(c) + ", 1, 1], got " + dimsStr(w.shape));
    int64_t out = w.shape[0];
    memory ym = yb.mem;
    if (yb.layout == "act") {
      expectDims(yb, {n, out, 1, 1}, "inner product output");
      ym = owned(memory::desc({n, out}, dt::f32, tag::ab));
      memory view(memory::desc({n, out, 1, 1}, dt::f32, tag::nchw), eng_, ym.get_data_handle());
      if (op == "ip") pendingOut_.push_back({reorder(view, yb.mem), {{DNNL_ARG_FROM, view}, {DNNL_ARG_TO, yb.mem}}, name + ".out"});
      else seg.push_back({reorder(yb.mem, view), {{DNNL_ARG_FROM, yb.mem}, {DNNL_ARG_TO, view}}, name + ".dout"});
    } else if (yb.layout == "plain") {
      expectDims(yb, {n, out}, "inner product output");
    } else {
      fail("inner product output must be a plain or act buffer");
    }
    memory::desc xMd = x.mem.get_desc(), wMd(w.shape, dt::f32, tag::any), bMd({out}, dt::f32, tag::a), yMd = ym.get_desc();
    inner_product_forward::primitive_desc fpd({flag(o, "train") || op != "ip" ? prop_kind::forward_training : prop_kind::forward_inference, xMd, wMd, bMd, yMd}, eng_);
    if (op == "ip") {
      Buffer &b = buf(o, "bias", "plain");
      expectDims(b, {out}, "inner product bias");
      memory wm = adapt(w.mem, fpd.weights_desc(), seg, true, name);
      seg.push_back({inner_product_forward(fpd), {{DNNL_ARG_SRC, x.mem}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, b.mem}, {DNNL_ARG_DST, ym}}, name});
      flushOut(seg);
    } else if (bwdData) {
      inner_product_backward_data::primitive_desc pd({xMd, wMd, yMd}, eng_, fpd);
      memory wm = adapt(w.mem, pd.weights_desc(), seg, true, name);
      seg.push_back({inner_product_backward_data(pd), {{DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, x.mem}}, name});
    } else {
      Buffer &db = buf(o, "diff_bias", "plain");
      expectDims(db, {out}, "inner product diff_bias");
      inner_product_backward_weights::primitive_desc pd({xMd, wMd, bMd, yMd}, eng_, fpd);
      memory wm = adapt(w.mem, pd.diff_weights_desc(), seg, false, name);
      seg.push_back({inner_product_backward_weights(pd), {{DNNL_ARG_SRC, x.mem}, {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_DIFF_WEIGHTS, wm}, {DNNL_ARG_DIFF_BIAS, db.mem}}, name});
      flushOut(seg);
    }
  }

  // The segment index argument of run/runAsync, or -1 after throwing a JS exception.
  long segmentArg(const Napi::CallbackInfo &info, const char *fn) {
    Napi::Env env = info.Env();
    if (busy_) {
      Napi::Error::New(env, std::string(fn) + ": the program is still running a runAsync() call").ThrowAsJavaScriptException();
      return -1;
    }
    if (info.Length() != 1 || !info[0].IsNumber()) {
      Napi::TypeError::New(env, std::string(fn) + "(segment): segment index expected").ThrowAsJavaScriptException();
      return -1;
    }
    if (released_) {
      Napi::Error::New(env, std::string(fn) + "(segment): the program was released").ThrowAsJavaScriptException();
      return -1;
    }
    double s = info[0].As<Napi::Number>().DoubleValue();
    if (s < 0 || s >= segments_.size() || s != static_cast<double>(static_cast<size_t>(s))) {
      Napi::RangeError::New(env, std::string(fn) + "(segment): no segment " + std::to_string(s) + " (program has " + std::to_string(segments_.size()) + ")").ThrowAsJavaScriptException();
      return -1;
    }
    return static_cast<long>(s);
  }

  void execute(size_t s) {
    if (prepDirty_) {
      for (Step &st : prep_) st.prim.execute(strm_, st.args);
      prepDirty_ = false;
    }
    for (Step &st : segments_[s]) {
      if (st.kernel) {
        strm_.wait();  // the kernel reads what the primitives before it wrote
        st.kernel();
      } else {
        st.prim.execute(strm_, st.args);
      }
    }
    strm_.wait();
  }

  Napi::Value Run(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    long s = segmentArg(info, "run");
    if (s < 0) return env.Undefined();
    try {
      execute(static_cast<size_t>(s));
    } catch (const std::exception &e) {
      Napi::Error::New(env, std::string("mnv2 native: execution failed: ") + e.what()).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  // Runs one segment on a libuv worker thread. Until the promise settles the program is busy: run, runAsync
  // and weightsChanged throw, and the caller must not touch the buffers it handed to the program.
  class RunWorker : public Napi::AsyncWorker {
   public:
    RunWorker(Napi::Env env, Program *p, size_t s) : Napi::AsyncWorker(env), p_(p), s_(s), done_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise promise() { return done_.Promise(); }
    void Execute() override {
      try {
        if (int n = gThreads.load()) omp_set_num_threads(n);
        p_->execute(s_);
      } catch (const std::exception &e) {
        SetError(std::string("mnv2 native: execution failed: ") + e.what());
      }
    }
    void OnOK() override { finish(); done_.Resolve(Env().Undefined()); }
    void OnError(const Napi::Error &e) override { finish(); done_.Reject(e.Value()); }

   private:
    void finish() {
      p_->busy_ = false;
      p_->Unref();
    }
    Program *p_;
    size_t s_;
    Napi::Promise::Deferred done_;
  };

  Napi::Value RunAsync(const Napi::CallbackInfo &info) {
    long s = segmentArg(info, "runAsync");
    if (s < 0) return info.Env().Undefined();
    auto *w = new RunWorker(info.Env(), this, static_cast<size_t>(s));
    busy_ = true;
    Ref();  // the program (and the arrays it references) outlives the run even if JS drops it
    w->Queue();
    return w->promise();
  }

  Napi::Value Bytes(const Napi::CallbackInfo &info) { return Napi::Number::New(info.Env(), static_cast<double>(ownedBytes_)); }

  // Frees the primitives and the program's memory now (not whenever V8 collects the object); run() then throws.
  Napi::Value Release(const Napi::CallbackInfo &info) {
    if (busy_) {
      Napi::Error::New(info.Env(), "release: the program is still running a runAsync() call").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    segments_.clear();
    prep_.clear();
    reordered_.clear();
    pendingOut_.clear();
    bufs_.clear();
    arenas_.clear();
    ownedBytes_ = 0;
    released_ = true;
    // glibc keeps freed blocks below its (adaptive, up to 32 MB) mmap threshold in the heap; give them back, or
    // a server cycling through batch sizes grows by what the evicted programs held.
    malloc_trim(0);
    return info.Env().Undefined();
  }

  // With cacheWeights: the caller's weight arrays changed, so the next run re-makes the weight layouts.
  Napi::Value WeightsChanged(const Napi::CallbackInfo &info) {
    if (busy_) {
      Napi::Error::New(info.Env(), "weightsChanged: the program is still running a runAsync() call").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    prepDirty_ = true;
    return info.Env().Undefined();
  }

  // [segment][step] -> "name: implementation" (reveals reference fallbacks and reorders).
  Napi::Value Implementations(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    uint32_t k = 0;
    for (auto &seg : segments_)
      for (auto &st : seg) {
        if (st.kernel) {
          out.Set(k++, Napi::String::New(env, st.name + ": " + st.kernelImpl));
          continue;
        }
        const_dnnl_primitive_desc_t cpd;
        dnnl_primitive_get_primitive_desc(st.prim.get(), &cpd);
        const char *impl = nullptr;
        dnnl_primitive_desc_query(cpd, dnnl_query_impl_info_str, 0, &impl);
        out.Set(k++, Napi::String::New(env, st.name + ": " + (impl ? impl : "?")));
      }
    return out;
  }
};

Napi::Value SetNumThreads(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "setNumThreads(n): a number expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1 || n > 1024) {
    Napi::RangeError::New(env, "setNumThreads(n): n must be in 1..1024").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  omp_set_num_threads(n);
  gThreads = n;
  return env.Undefined();
}

Napi::Value Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  const dnnl_version_t *v = dnnl_version();
  Napi::Object o = Napi::Object::New(env);
  o.Set("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch));
  o.Set("maxThreads", omp_get_max_threads());
  o.Set("maxTensorElements", static_cast<double>(kMaxElements));
  // Blocked activations matching the vector width: 16 floats with AVX-512, 8 otherwise.
  int isa = static_cast<int>(dnnl::get_effective_cpu_isa());
  o.Set("actFormat", (isa & 0x27) == 0x27 ? "nChw16c" : "nChw8c");
  return o;
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("Program", Program::Init(env));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  return exports;
}

}  // namespace

NODE_API_MODULE(mnv2, InitModule)
