//! AVX-512F implementation (16 lanes).
//!
//! Every method is `#[inline(always)]` without `#[target_feature]`; it is only ever inlined
//! into the `#[target_feature(enable = "avx512f,fma")]` entry points in the parent module,
//! which are only called after runtime detection of AVX-512F and FMA.

use super::{EXP2_C, Simd};
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct Avx512;

impl Simd for Avx512 {
    const W: usize = 16;
    type V = __m512;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: caller guarantees 16 readable floats at `p`; unaligned load.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: caller guarantees 16 writable floats at `p`; unaligned store.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn exp2(x: __m512) -> __m512 {
        // SAFETY: AVX-512F available (module contract).
        unsafe {
            // Clamp so that -inf does not produce NaN; 2^-127 is negligible next to the
            // row maximum's contribution of 1.
            let x = _mm512_max_ps(x, _mm512_set1_ps(-127.0));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let f = _mm512_sub_ps(x, n);
            let mut p = _mm512_set1_ps(EXP2_C[5]);
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[4]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[3]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[2]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[1]));
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(EXP2_C[0]));
            _mm512_scalef_ps(p, n)
        }
    }
    #[inline(always)]
    unsafe fn keep_first(v: __m512, n: usize, fill: f32) -> __m512 {
        if n >= 16 {
            return v;
        }
        let mask: __mmask16 = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: AVX-512F available (module contract).
        unsafe { _mm512_mask_blend_ps(mask, _mm512_set1_ps(fill), v) }
    }
}

/// bf16 pair products for the AVX512-BF16 path. These methods are only inlined into the
/// `#[target_feature(enable = "avx512f,avx512bf16,fma")]` entry points of `super::bf16`,
/// which are only called after runtime detection of AVX-512F, AVX512-BF16 and FMA.
impl super::bf16::Bf16Simd for Avx512 {
    type P = __m512bh;

    #[inline(always)]
    unsafe fn load_pairs(p: *const u16) -> __m512bh {
        // SAFETY: caller guarantees 32 readable u16 at `p` (unaligned load); the bit cast
        // between two 64-byte vector types is a no-op.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast())) }
    }
    #[inline(always)]
    unsafe fn splat_pair(p: *const u16) -> __m512bh {
        // SAFETY: caller guarantees 2 readable u16 at `p` (unaligned read); same-size cast.
        unsafe {
            let x = p.cast::<i32>().read_unaligned();
            std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(x))
        }
    }
    #[inline(always)]
    unsafe fn dot2(acc: __m512, a: __m512bh, b: __m512bh) -> __m512 {
        // SAFETY: AVX512-BF16 available (module contract).
        unsafe { _mm512_dpbf16_ps(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn store_pairs(p: *mut u16, lo: __m512, hi: __m512) {
        // SAFETY: AVX-512F + AVX512-BF16 available (module contract); caller guarantees 32
        // writable u16 at `p` (unaligned store); same-size casts.
        unsafe {
            let l = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                _mm512_cvtneps_pbh(lo),
            ));
            let h = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(
                _mm512_cvtneps_pbh(hi),
            ));
            _mm512_storeu_si512(p.cast(), _mm512_or_si512(l, _mm512_slli_epi32::<16>(h)));
        }
    }
    #[inline(always)]
    unsafe fn store_bf16(p: *mut u16, x: __m512) {
        // SAFETY: AVX512-BF16 available (module contract); caller guarantees 16 writable u16
        // at `p` (unaligned store); same-size cast.
        unsafe {
            let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x));
            _mm256_storeu_si256(p.cast(), h);
        }
    }
}
