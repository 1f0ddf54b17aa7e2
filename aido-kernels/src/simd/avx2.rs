//! AVX2 + FMA implementation (8 lanes).
//!
//! Every method is `#[inline(always)]` without `#[target_feature]`; it is only ever inlined
//! into the `#[target_feature(enable = "avx2,fma")]` entry points in the parent module,
//! which are only called after runtime detection of AVX2 and FMA.

use super::{EXP2_C, Simd};
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const W: usize = 8;
    type V = __m256;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: caller guarantees 8 readable floats at `p`; unaligned load.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: caller guarantees 8 writable floats at `p`; unaligned store.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: FMA available (module contract).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: AVX available (module contract).
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn exp2(x: __m256) -> __m256 {
        // SAFETY: AVX2 + FMA available (module contract).
        unsafe {
            // Clamp: -inf and anything below -127 give exactly 0 (exponent field 0).
            let x = _mm256_max_ps(x, _mm256_set1_ps(-127.0));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            let f = _mm256_sub_ps(x, n);
            let mut p = _mm256_set1_ps(EXP2_C[5]);
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C[4]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C[3]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C[2]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C[1]));
            p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(EXP2_C[0]));
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            let pow = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e));
            _mm256_mul_ps(p, pow)
        }
    }
    #[inline(always)]
    unsafe fn keep_first(v: __m256, n: usize, fill: f32) -> __m256 {
        if n >= 8 {
            return v;
        }
        // SAFETY: AVX available (module contract).
        unsafe {
            let idx = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
            let keep = _mm256_cmp_ps::<_CMP_LT_OQ>(idx, _mm256_set1_ps(n as f32));
            _mm256_blendv_ps(_mm256_set1_ps(fill), v, keep)
        }
    }
}
