//! Seconds per GEARS training step (forward, GEARS's loss, backward) on the CPU backend at a
//! screen's size, learned gene embeddings, a random co-expression graph of 20 partners per
//! gene. What `aido perturb fit` spends per batch, without the data loading and the optimizer.
//!
//!   cargo run --release -p aido-tasks --example gears_step -- [GENES=2000] [BATCH=32] [STEPS=5]

use aido_tasks::gears::{GearsConfig, GearsGraphs};
use aido_tasks::perturb::GeneEdge;
use aido_tasks::perturb_fit::gears_loss;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::TensorData;

type B = Autodiff<aido_model::backend::Cpu>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let (g, b, steps) = (arg(1, 2000), arg(2, 32), arg(3, 5));
    let device = Default::default();
    // A deterministic graph: gene i linked to the 20 genes i+1 .. i+20 (mod G).
    let edges: Vec<GeneEdge> = (0..g)
        .flat_map(|i| {
            (1..=20).map(move |d| GeneEdge {
                source: (i + d) % g,
                target: i,
                weight: 0.5,
            })
        })
        .collect();
    let graphs = GearsGraphs::<B>::new(&edges, &edges, g, &device)?;
    let model = GearsConfig::new(g)
        .init::<B>(&device)
        .renormalize_embeddings();
    let x: Vec<f32> = (0..b * g).map(|i| ((i * 7919) % 13) as f32 * 0.3).collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [b, g]), &device);
    let y = x.clone().add_scalar(0.1);
    let w = Tensor::<B, 2>::ones([b, g], &device).div_scalar((b * g) as f64);
    let ctrl = x.clone().mean_dim(0).expand([b, g]);
    // Half the cells perturbed at one gene each.
    let perts: Vec<Vec<usize>> = (0..b)
        .map(|i| {
            if i % 2 == 0 {
                vec![(i * 37) % g]
            } else {
                vec![]
            }
        })
        .collect();
    let mut times = Vec::new();
    for s in 0..=steps {
        let t0 = std::time::Instant::now();
        let pred = model.forward(x.clone(), &perts, None, &graphs)?;
        let loss = gears_loss(pred, y.clone(), w.clone(), ctrl.clone(), 0.1);
        let grads = loss.backward();
        drop(grads);
        if s > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "GEARS step, {g} genes, batch {b}, hidden 64: median {:.3} s over {steps} steps (min {:.3})",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}
