// A measurement, not part of optcore-lowbit: Adam's step on 8-bit block-quantized moments as one XLA FFI
// custom call for x86-64 CPUs with AVX-512 (built and driven by ../lowbit_native_kernel.py).
//
// Per block of the plugin's layout, in one pass and in registers or L1: decode the old codes (the 256
// levels of each code held in vector registers, looked up with permutes), update both moments from the
// gradient, reduce them to the new block maxima, encode them (the minimum of one multiply-add per decade
// of the dynamic code, as optcore_lowbit._quantize does) and, optionally, write Adam's update. Blocks
// are shared out over XLA's intra-op thread pool.
//
// Arguments: g (f32, the param's shape), mu codes (u8) and scales (f32), nu codes and scales, scalars
// (f32[8]: b1, 1-b1, b2, 1-b2, eps, eps_root, 1-b1^t, 1-b2^t), tables (f32[256 + 256 + 14 + 16]: the
// signed and unsigned levels, then each code's per-decade multipliers and offsets). Results: the update
// (f32, g's shape, or f32[1] when with_update is false), then the new codes and scales (aliased to the
// old ones by the caller). Attributes: row (entries per row of the layout), n_blocks (blocks per row),
// length (entries per block), with_update.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMaxBlock = 4096;
constexpr int kSignedPieces = 7;    // decades of the signed 8-bit code (7 magnitude bits)
constexpr int kUnsignedPieces = 8;  // decades of the unsigned 8-bit code

struct Hyper {
  float b1, one_minus_b1, b2, one_minus_b2, eps, eps_root, c1, c2;
};

struct Step {
  int64_t row, n_blocks, length, total_blocks;
  const float* g;
  float* update;  // null: the caller computes the update itself
  const uint8_t* mu_codes;
  const float* mu_scales;
  const uint8_t* nu_codes;
  const float* nu_scales;
  uint8_t* new_mu_codes;
  float* new_mu_scales;
  uint8_t* new_nu_codes;
  float* new_nu_scales;
  Hyper h;
  const float* mu_levels;  // 256: magnitudes 0..127, then their negatives
  const float* nu_levels;  // 256
  const float* mu_pieces;  // kSignedPieces multipliers, then kSignedPieces offsets
  const float* nu_pieces;  // kUnsignedPieces multipliers, then kUnsignedPieces offsets
};

// levels[idx & 127] for 16 indices, the 128 levels held in 8 registers: a permute picks from 32 levels,
// blends on bits 5 and 6 pick the permute.
inline __m512 lookup128(const __m512* t, __m512i idx) {
  __m512 p0 = _mm512_permutex2var_ps(t[0], idx, t[1]);
  __m512 p1 = _mm512_permutex2var_ps(t[2], idx, t[3]);
  __m512 p2 = _mm512_permutex2var_ps(t[4], idx, t[5]);
  __m512 p3 = _mm512_permutex2var_ps(t[6], idx, t[7]);
  __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
  __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
  return _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, p0, p1), _mm512_mask_blend_ps(b5, p2, p3));
}

// The codes of 16 values normalized to [-1, 1] ([0, 1] unsigned): the magnitude index is the minimum of
// the decades' affine maps (compared as int32 bit patterns, as the plugin does), rounded half to even.
template <int P, bool SIGNED>
inline __m512i encode16(__m512 x, const __m512* mul, const __m512* add) {
  const __m512i one = _mm512_castps_si512(_mm512_set1_ps(1.0f));
  __m512 a = SIGNED ? _mm512_abs_ps(x) : x;
  a = _mm512_castsi512_ps(_mm512_min_epi32(_mm512_max_epi32(_mm512_castps_si512(a), _mm512_setzero_si512()), one));
  __m512i m = _mm512_castps_si512(_mm512_fmadd_ps(a, mul[0], add[0]));
  for (int p = 1; p < P; ++p) m = _mm512_min_epi32(m, _mm512_castps_si512(_mm512_fmadd_ps(a, mul[p], add[p])));
  __m512i q = _mm512_cvtps_epi32(_mm512_castsi512_ps(m));  // the default rounding mode: half to even
  if (SIGNED) {
    __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    q = _mm512_mask_or_epi32(q, negative, q, _mm512_set1_epi32(128));
  }
  return q;
}

template <int P, bool SIGNED>
void encode_block(const float* x, float absmax, const float* pieces, uint8_t* out, int64_t padded) {
  __m512 mul[P], add[P];
  for (int p = 0; p < P; ++p) {
    mul[p] = _mm512_set1_ps(pieces[p]);
    add[p] = _mm512_set1_ps(pieces[P + p]);
  }
  const __m512 inverse = _mm512_set1_ps(absmax > 0 ? 1.0f / absmax : 0.0f);  // a zero block stays zero
  for (int64_t i = 0; i < padded; i += 16) {
    __m512i q = encode16<P, SIGNED>(_mm512_mul_ps(_mm512_load_ps(x + i), inverse), mul, add);
    _mm_store_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(q));
  }
}

// A block's entries are copied into zero-padded local buffers (a multiple of 16 entries), so that every
// loop runs on whole vectors; padding decodes to 0 and leaves the maxima alone.
void run_blocks(const Step& s, int64_t first, int64_t last) {
  alignas(64) float mu[kMaxBlock], nu[kMaxBlock], g[kMaxBlock];
  alignas(64) uint8_t codes[kMaxBlock], out[kMaxBlock];
  __m512 mu_table[8], nu_table[16];
  for (int k = 0; k < 8; ++k) mu_table[k] = _mm512_loadu_ps(s.mu_levels + 16 * k);
  for (int k = 0; k < 16; ++k) nu_table[k] = _mm512_loadu_ps(s.nu_levels + 16 * k);
  const __m512 b1 = _mm512_set1_ps(s.h.b1), one_minus_b1 = _mm512_set1_ps(s.h.one_minus_b1);
  const __m512 b2 = _mm512_set1_ps(s.h.b2), one_minus_b2 = _mm512_set1_ps(s.h.one_minus_b2);
  const __m512i sign_bit = _mm512_set1_epi32(128);
  for (int64_t b = first; b < last; ++b) {
    const int64_t r = b / s.n_blocks, start = (b % s.n_blocks) * s.length;
    const int64_t n = std::min(s.length, s.row - start), padded = (n + 15) & ~int64_t{15};
    std::memcpy(g, s.g + r * s.row + start, n * 4);
    std::memset(g + n, 0, (padded - n) * 4);

    // First moment: signed levels are the magnitudes' with the code's sign bit moved to the float's.
    std::memcpy(codes, s.mu_codes + b * s.length, n);
    std::memset(codes + n, 0, padded - n);
    __m512 scale = _mm512_set1_ps(s.mu_scales[b]), running_max = _mm512_setzero_ps();
    __mmask16 nan = 0;
    for (int64_t i = 0; i < padded; i += 16) {
      __m512i c = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(codes + i)));
      __m512 level = lookup128(mu_table, c);
      level = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(level),
                                                   _mm512_slli_epi32(_mm512_and_si512(c, sign_bit), 24)));
      __m512 m = _mm512_fmadd_ps(b1, _mm512_mul_ps(level, scale), _mm512_mul_ps(one_minus_b1, _mm512_load_ps(g + i)));
      _mm512_store_ps(mu + i, m);
      nan |= _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
      running_max = _mm512_max_ps(_mm512_abs_ps(m), running_max);
    }
    const float mu_max = nan ? NAN : _mm512_reduce_max_ps(running_max);  // a NaN spreads to the block

    // Second moment: 256 unsigned levels, two 128-level halves picked by bit 7.
    std::memcpy(codes, s.nu_codes + b * s.length, n);
    std::memset(codes + n, 0, padded - n);
    scale = _mm512_set1_ps(s.nu_scales[b]);
    running_max = _mm512_setzero_ps();
    nan = 0;
    for (int64_t i = 0; i < padded; i += 16) {
      __m512i c = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(codes + i)));
      __m512 level = _mm512_mask_blend_ps(_mm512_test_epi32_mask(c, sign_bit), lookup128(nu_table, c),
                                          lookup128(nu_table + 8, c));
      __m512 gi = _mm512_load_ps(g + i);
      __m512 v = _mm512_fmadd_ps(b2, _mm512_mul_ps(level, scale), _mm512_mul_ps(one_minus_b2, _mm512_mul_ps(gi, gi)));
      _mm512_store_ps(nu + i, v);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      running_max = _mm512_max_ps(_mm512_abs_ps(v), running_max);
    }
    const float nu_max = nan ? NAN : _mm512_reduce_max_ps(running_max);

    if (s.update != nullptr) {  // Adam's update from the new moments, before they are rounded
      const __m512 c1 = _mm512_set1_ps(s.h.c1), c2 = _mm512_set1_ps(s.h.c2);
      const __m512 eps = _mm512_set1_ps(s.h.eps), eps_root = _mm512_set1_ps(s.h.eps_root);
      for (int64_t i = 0; i < padded; i += 16) {
        __m512 root = _mm512_sqrt_ps(_mm512_add_ps(_mm512_div_ps(_mm512_load_ps(nu + i), c2), eps_root));
        _mm512_store_ps(g + i, _mm512_div_ps(_mm512_div_ps(_mm512_load_ps(mu + i), c1), _mm512_add_ps(root, eps)));
      }
      std::memcpy(s.update + r * s.row + start, g, n * 4);
    }

    uint8_t* new_mu = s.new_mu_codes + b * s.length;
    uint8_t* new_nu = s.new_nu_codes + b * s.length;
    encode_block<kSignedPieces, true>(mu, mu_max, s.mu_pieces, out, padded);
    std::memcpy(new_mu, out, n);
    encode_block<kUnsignedPieces, false>(nu, nu_max, s.nu_pieces, out, padded);
    std::memcpy(new_nu, out, n);
    std::memset(new_mu + n, 0, s.length - n);  // a row's padding entries keep code 0
    std::memset(new_nu + n, 0, s.length - n);
    s.new_mu_scales[b] = mu_max;
    s.new_nu_scales[b] = nu_max;
  }
}

// The caller works too, and waits only for chunks some thread has taken: tasks that start late find
// nothing left. The shared state lives on the heap for such late tasks.
void run_parallel(ffi::ThreadPool& pool, std::shared_ptr<Step> step) {
  const int64_t total = step->total_blocks;
  const int64_t chunk = std::max<int64_t>(1, 65536 / step->length);  // about 64K entries per task
  const int64_t n_chunks = (total + chunk - 1) / chunk;
  const int64_t workers = std::min<int64_t>(pool.num_threads() + 1, n_chunks);
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  std::function<void()> work = [step, progress, total, chunk, n_chunks]() {
    for (int64_t c; (c = progress->next.fetch_add(1)) < n_chunks;) {
      run_blocks(*step, c * chunk, std::min(total, (c + 1) * chunk));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t w = 1; w < workers; ++w) pool.Schedule(std::function<void()>(work));
  work();
  while (progress->done.load(std::memory_order_acquire) < n_chunks) _mm_pause();
}

ffi::Error Adam8(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::U8> mu_codes,
                 ffi::Buffer<ffi::F32> mu_scales, ffi::Buffer<ffi::U8> nu_codes, ffi::Buffer<ffi::F32> nu_scales,
                 ffi::Buffer<ffi::F32> scalars, ffi::Buffer<ffi::F32> tables, ffi::ResultBuffer<ffi::F32> update,
                 ffi::ResultBuffer<ffi::U8> new_mu_codes, ffi::ResultBuffer<ffi::F32> new_mu_scales,
                 ffi::ResultBuffer<ffi::U8> new_nu_codes, ffi::ResultBuffer<ffi::F32> new_nu_scales, int64_t row,
                 int64_t n_blocks, int64_t length, bool with_update) {
  if (length > kMaxBlock || length < 1) return ffi::Error::InvalidArgument("block length must be in [1, 4096]");
  if (scalars.element_count() != 8 || tables.element_count() != 512 + 2 * (kSignedPieces + kUnsignedPieces))
    return ffi::Error::InvalidArgument("expected 8 scalars and 542 table entries");
  auto step = std::make_shared<Step>();
  step->row = row;
  step->n_blocks = n_blocks;
  step->length = length;
  step->total_blocks = (g.element_count() / row) * n_blocks;
  step->g = g.typed_data();
  step->update = with_update ? update->typed_data() : nullptr;
  step->mu_codes = mu_codes.typed_data();
  step->mu_scales = mu_scales.typed_data();
  step->nu_codes = nu_codes.typed_data();
  step->nu_scales = nu_scales.typed_data();
  step->new_mu_codes = new_mu_codes->typed_data();
  step->new_mu_scales = new_mu_scales->typed_data();
  step->new_nu_codes = new_nu_codes->typed_data();
  step->new_nu_scales = new_nu_scales->typed_data();
  const float* h = scalars.typed_data();
  step->h = {h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]};
  const float* t = tables.typed_data();
  step->mu_levels = t;
  step->nu_levels = t + 256;
  step->mu_pieces = t + 512;
  step->nu_pieces = t + 512 + 2 * kSignedPieces;
  run_parallel(pool, step);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LowbitAdam8, Adam8,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("row")
                                  .Attr<int64_t>("n_blocks")
                                  .Attr<int64_t>("length")
                                  .Attr<bool>("with_update"));
