//! Portable 16-lane implementation of [`Simd`] and [`Bf16Simd`] in plain Rust (arrays of 16
//! `f32`, no intrinsics), used by the bf16 reference path [`crate::KernelPath::ScalarBf16`].
//!
//! It reproduces the arithmetic of the AVX-512 + AVX512-BF16 backend operation by operation,
//! so that the two paths can be compared tightly:
//! * `fma` is computed as `(a·b + c)` in f64 and rounded to f32 (the product is exact in f64;
//!   the result differs from a true fused multiply-add only when the f64 sum ends exactly
//!   halfway between two f32, which essentially never happens);
//! * `exp2` is the same range-reduced degree-5 polynomial as the x86 backends; results below
//!   `2^-126` (only reached for arguments ≤ -126.5) are 0 here and subnormal there, and both
//!   become 0 when rounded to bf16;
//! * `dot2` adds the high products first, then the low products, each sum rounded to f32,
//!   and reads subnormal bf16 operands as zero, like `VDPBF16PS` (which also flushes
//!   subnormal *results* to zero; this implementation does not, a difference only for
//!   partial sums below `1.2e-38` in magnitude);
//! * bf16 rounding is round-to-nearest-even with subnormal results flushed to signed zero,
//!   like `VCVTNEPS2BF16`.
//!
//! The compiler vectorises the lane loops for whatever baseline the target has.

use super::bf16::Bf16Simd;
use super::{EXP2_C, Simd};

#[derive(Clone, Copy)]
pub(crate) struct Portable;

const W: usize = 16;
type A = [f32; W];

#[inline(always)]
fn map2(a: A, b: A, f: impl Fn(f32, f32) -> f32) -> A {
    std::array::from_fn(|i| f(a[i], b[i]))
}

/// f32 fused multiply-add emulated through f64 (see the module docs).
#[inline(always)]
fn fma1(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// bf16 bits → f32 with subnormals read as (signed) zero.
#[inline(always)]
fn decode_daz(h: u16) -> f32 {
    let b = (h as u32) << 16;
    f32::from_bits(if b & 0x7f80_0000 == 0 {
        b & 0x8000_0000
    } else {
        b
    })
}

/// f32 → bf16 bits, round-to-nearest-even, subnormal results flushed to signed zero, NaN
/// kept (quiet).
#[inline(always)]
fn round_ftz(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0 {
        (b >> 16) as u16 & 0x8000
    } else {
        crate::f32_to_bf16(x)
    }
}

impl Simd for Portable {
    const W: usize = W;
    type V = A;

    #[inline(always)]
    unsafe fn splat(x: f32) -> A {
        [x; W]
    }
    #[inline(always)]
    unsafe fn zero() -> A {
        [0.0; W]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> A {
        // SAFETY: the caller guarantees 16 readable floats at `p`.
        unsafe { p.cast::<A>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: A) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { p.cast::<A>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: A, b: A, c: A) -> A {
        std::array::from_fn(|i| fma1(a[i], b[i], c[i]))
    }
    #[inline(always)]
    unsafe fn add(a: A, b: A) -> A {
        map2(a, b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(a: A, b: A) -> A {
        map2(a, b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(a: A, b: A) -> A {
        map2(a, b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn max(a: A, b: A) -> A {
        // `_mm512_max_ps` semantics: the second operand unless `a > b`.
        map2(a, b, |x, y| if x > y { x } else { y })
    }
    #[inline(always)]
    unsafe fn exp2(x: A) -> A {
        std::array::from_fn(|i| {
            let x = if x[i] > -127.0 { x[i] } else { -127.0 };
            // Round to nearest even (exact for |x| < 2^22).
            const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
            let n = (x + MAGIC) - MAGIC;
            let f = x - n;
            let mut p = EXP2_C[5];
            for &c in EXP2_C[..5].iter().rev() {
                p = fma1(p, f, c);
            }
            let e = n as i32 + 127;
            p * if e > 0 {
                f32::from_bits((e as u32) << 23)
            } else {
                0.0
            }
        })
    }
    #[inline(always)]
    unsafe fn keep_first(v: A, n: usize, fill: f32) -> A {
        std::array::from_fn(|i| if i < n { v[i] } else { fill })
    }
}

impl Bf16Simd for Portable {
    /// (low elements, high elements), decoded.
    type P = (A, A);

    #[inline(always)]
    unsafe fn load_pairs(p: *const u16) -> (A, A) {
        // SAFETY: the caller guarantees 32 readable u16 at `p`.
        let h = unsafe { p.cast::<[u16; 2 * W]>().read_unaligned() };
        (
            std::array::from_fn(|i| decode_daz(h[2 * i])),
            std::array::from_fn(|i| decode_daz(h[2 * i + 1])),
        )
    }
    #[inline(always)]
    unsafe fn splat_pair(p: *const u16) -> (A, A) {
        // SAFETY: the caller guarantees 2 readable u16 at `p`.
        let h = unsafe { p.cast::<[u16; 2]>().read_unaligned() };
        ([decode_daz(h[0]); W], [decode_daz(h[1]); W])
    }
    #[inline(always)]
    unsafe fn dot2(acc: A, a: (A, A), b: (A, A)) -> A {
        // Both products are exact in f32 (8-bit significands).
        std::array::from_fn(|i| (acc[i] + a.1[i] * b.1[i]) + a.0[i] * b.0[i])
    }
    #[inline(always)]
    unsafe fn store_pairs(p: *mut u16, lo: A, hi: A) {
        let h: [u16; 2 * W] = std::array::from_fn(|i| {
            if i % 2 == 0 {
                round_ftz(lo[i / 2])
            } else {
                round_ftz(hi[i / 2])
            }
        });
        // SAFETY: the caller guarantees 32 writable u16 at `p`.
        unsafe { p.cast::<[u16; 2 * W]>().write_unaligned(h) }
    }
    #[inline(always)]
    unsafe fn store_bf16(p: *mut u16, x: A) {
        let h: [u16; W] = std::array::from_fn(|i| round_ftz(x[i]));
        // SAFETY: the caller guarantees 16 writable u16 at `p`.
        unsafe { p.cast::<[u16; W]>().write_unaligned(h) }
    }
}
