//! Statistical and exact checks of the RDA objective against SPEC-rda-training §1, with fixed
//! seeds. Expected values come from the specification's formulas and the Beta(2, 2)
//! distribution's moments (mean 1/2, variance αβ/((α+β)²(α+β+1)) = 1/20); tolerances are stated
//! next to each check as multiples of the standard error.
#![allow(clippy::unwrap_used)]

use aido_model::Cpu;
use aido_model::burn::tensor::{Tensor, TensorData};
use aido_rda::{RdaBatch, RdaConfig, RdaSampler, Replacement, masked_mse};

/// `g` genes, all measured, plus the two depth positions.
fn present(g: usize) -> Vec<u8> {
    vec![1u8; g + 2]
}

/// A cell with counts 1..=6 on every third gene of `g` (≈ g/3 non-zero genes).
fn cell(g: usize) -> Vec<(u32, f32)> {
    (0..g)
        .filter(|p| p % 3 == 0)
        .map(|p| (p as u32, (1 + p % 6) as f32))
        .collect()
}

#[test]
fn downsampling_probability_and_beta_rates() {
    let g = 3000;
    let s = RdaSampler::new(RdaConfig::default(), 42, &present(g)).unwrap();
    let counts = cell(g);
    let n = 4000;
    let (mut down, mut ratio_sum, mut b_sum, mut b_sq) = (0usize, 0.0f64, 0.0f64, 0.0f64);
    for c in 0..n {
        let e = s.example(0, c, &counts).unwrap();
        if let Some(b) = e.rate {
            down += 1;
            ratio_sum += f64::from(e.input_total / e.raw_total);
            b_sum += b;
            b_sq += b * b;
        } else {
            assert_eq!(e.input_total, e.raw_total);
        }
    }
    let frac = down as f64 / n as f64;
    // Bernoulli(0.5): standard error 0.0079; tolerance 0.03 (≈ 4 s.e.).
    assert!((frac - 0.5).abs() < 0.03, "downsampled fraction {frac}");
    let mean_b = b_sum / down as f64;
    let var_b = b_sq / down as f64 - mean_b * mean_b;
    // Beta(2,2): mean 0.5 (s.e. 0.005, tolerance 0.02), variance 0.05 (tolerance 0.01).
    assert!((mean_b - 0.5).abs() < 0.02, "mean rate {mean_b}");
    assert!((var_b - 0.05).abs() < 0.01, "rate variance {var_b}");
    // Binomial thinning: E[total(x)/total(x_raw)] = E[b] = 0.5 (tolerance 0.02).
    let mean_ratio = ratio_sum / down as f64;
    assert!(
        (mean_ratio - 0.5).abs() < 0.02,
        "mean depth ratio {mean_ratio}"
    );
}

#[test]
fn small_cells_are_never_downsampled() {
    let g = 300;
    let s = RdaSampler::new(RdaConfig::default(), 1, &present(g)).unwrap();
    let counts = cell(g); // total 350 < 1,000
    for c in 0..200 {
        assert!(s.example(0, c, &counts).unwrap().rate.is_none());
    }
}

#[test]
fn masking_fractions_per_class_and_never_depth_or_unmeasured() {
    let g = 10_000;
    let mut pres = present(g);
    for p in pres.iter_mut().take(g).skip(9_000) {
        *p = 0; // the last 1,000 genes are not measured
    }
    let cfg = RdaConfig {
        downsample_prob: 0.0,
        ..RdaConfig::default()
    };
    let s = RdaSampler::new(cfg, 3, &pres).unwrap();
    // 1,000 non-zero measured genes (positions 0..1000), 8,000 zero measured genes.
    let counts: Vec<(u32, f32)> = (0..1000).map(|p| (p as u32, 2.0)).collect();
    for c in 0..20 {
        let e = s.example(0, c, &counts).unwrap();
        let masked_nz = (0..1000).filter(|&p| e.mask[p] == 1).count();
        let masked_z = (1000..9000).filter(|&p| e.mask[p] == 1).count();
        // Exactly round(0.30 · 1000) and round(0.03 · 8000).
        assert_eq!((masked_nz, masked_z), (300, 240));
        assert!((9000..g + 2).all(|p| e.mask[p] == 0));
        for p in 0..g {
            if e.mask[p] == 1 {
                assert_eq!(e.input[p], -1.0);
            }
        }
    }
    // With downsampling, the classes are those of the *input*.
    let s = RdaSampler::new(RdaConfig::default(), 4, &present(3000)).unwrap();
    let counts = cell(3000);
    let mut seen_down = false;
    for c in 0..50 {
        let e = s.example(0, c, &counts).unwrap();
        seen_down |= e.rate.is_some();
        let nnz = e.input_nonzero;
        let k_nz = (0.30 * nnz as f64).round() as usize;
        let k_z = (0.03 * (3000 - nnz) as f64).round() as usize;
        let masked = e.mask[..3000].iter().filter(|&&m| m == 1).count();
        let unmasked_positive = (0..3000).filter(|&p| e.input[p] > 0.0).count();
        assert_eq!(masked, k_nz + k_z, "cell {c}");
        assert_eq!(unmasked_positive, nnz - k_nz, "cell {c}");
    }
    assert!(seen_down);
}

#[test]
fn targets_and_depth_tokens_follow_the_formulas() {
    let g = 12;
    let s = RdaSampler::new(RdaConfig::default(), 5, &present(g)).unwrap();
    // Raw total 1,500 (≥ 1,000, so some examples are downsampled).
    let counts = vec![(0u32, 900.0f32), (5, 100.0), (9, 500.0)];
    let mut saw = [false, false];
    for c in 0..40 {
        let e = s.example(0, c, &counts).unwrap();
        saw[usize::from(e.rate.is_some())] = true;
        // Target from the raw counts whatever the input: ln(1 + c/1500 · 1e4).
        for &(p, v) in &counts {
            let want = (1.0 + f64::from(v) / 1500.0 * 1e4).ln();
            let got = f64::from(e.target[p as usize]);
            assert!(
                (got - want).abs() < 1e-5 * want,
                "target {p}: {got} vs {want}"
            );
        }
        // T = log10(raw total), S = log10(input total), no floor.
        assert!((f64::from(e.input[g]) - 1500f64.log10()).abs() < 1e-6);
        let s_tok = f64::from(e.input_total).log10();
        assert!((f64::from(e.input[g + 1]) - s_tok).abs() < 1e-6);
        assert_eq!(e.mask[g], 0);
        assert_eq!(e.mask[g + 1], 0);
        // Unmasked input genes: ln(1 + x/total(x) · 1e4) of the (thinned) counts.
        assert!(e.input_total <= e.raw_total);
    }
    assert!(saw[0] && saw[1], "both branches were drawn");
}

#[test]
fn the_stream_is_reproducible_per_cell() {
    let g = 600;
    let s = RdaSampler::new(RdaConfig::default(), 9, &present(g)).unwrap();
    let counts = cell(g);
    let a = s.example(2, 17, &counts).unwrap();
    assert_eq!(a, s.example(2, 17, &counts).unwrap());
    assert_ne!(a.mask, s.example(2, 18, &counts).unwrap().mask);
    assert_ne!(a.mask, s.example(3, 17, &counts).unwrap().mask);
    let other = RdaSampler::new(RdaConfig::default(), 10, &present(g)).unwrap();
    assert_ne!(a.mask, other.example(2, 17, &counts).unwrap().mask);
}

#[test]
fn replacement_splits_chosen_positions_80_10_10() {
    let g = 5000;
    let cfg = RdaConfig {
        downsample_prob: 0.0,
        replacement: Some(Replacement {
            random: 0.1,
            keep: 0.1,
        }),
        ..RdaConfig::default()
    };
    let s = RdaSampler::new(cfg, 11, &present(g)).unwrap();
    let counts = cell(g);
    let (mut chosen, mut masked) = (0usize, 0usize);
    for c in 0..20 {
        let e = s.example(0, c, &counts).unwrap();
        for p in 0..g {
            if e.mask[p] == 1 {
                chosen += 1;
                masked += usize::from(e.input[p] == -1.0);
            }
        }
    }
    let f = masked as f64 / chosen as f64;
    // ≈ 12,800 chosen positions: s.e. of a 0.8 fraction ≈ 0.0035; tolerance 0.02.
    assert!((f - 0.8).abs() < 0.02, "masked share {f} of {chosen}");
}

#[test]
fn loss_is_the_mean_over_masked_positions_only() {
    let dev = Default::default();
    let t = |v: Vec<f32>| Tensor::<Cpu, 3>::from_data(TensorData::new(v, [1, 4, 1]), &dev);
    let target = vec![1.0, 2.0, 3.0, 4.0];
    let weight = vec![1.0, 0.0, 1.0, 0.0];
    let pred = vec![2.0, 100.0, 1.0, -7.0];
    let l = masked_mse(t(pred), t(target.clone()), t(weight.clone()), 2);
    let v: f32 = l.into_data().into_vec::<f32>().unwrap()[0];
    // ((2−1)² + (1−3)²) / 2 = 2.5.
    assert!((v - 2.5).abs() < 1e-6, "{v}");
    // Changing unmasked predictions changes nothing.
    let l2 = masked_mse(t(vec![2.0, -5.0, 1.0, 1e3]), t(target), t(weight), 2);
    let v2: f32 = l2.into_data().into_vec::<f32>().unwrap()[0];
    assert_eq!(v, v2);
}

#[test]
fn bad_cells_and_empty_batches_are_errors() {
    let s = RdaSampler::new(RdaConfig::default(), 0, &present(10)).unwrap();
    let e = s.example(0, 7, &[]).unwrap_err().to_string();
    assert!(e.contains("cell 7") && e.contains("no counts"), "{e}");
    let e = s.example(0, 8, &[(3, f32::NAN)]).unwrap_err().to_string();
    assert!(e.contains("cell 8"), "{e}");
    let e = s.example(0, 9, &[(11, 1.0)]).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    assert!(RdaBatch::stack(&[], 12).is_err());
    let bad = RdaConfig {
        mask_zero_fraction: 1.5,
        ..RdaConfig::default()
    };
    assert!(RdaSampler::new(bad, 0, &present(10)).is_err());
}
