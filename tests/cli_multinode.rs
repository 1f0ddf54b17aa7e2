//! Experimental multi-node pretraining from outside: `aido orchestrator` and two `aido pretrain
//! --nodes 2` processes on 127.0.0.1 (CPU) log the losses of one process with `--grad-accum 2`
//! (the expectation: the single-process run, within 1e-5); nodes that start from different
//! weights are refused; a node that dies stops the other, naming the last good checkpoint, and
//! `--resume` on both nodes finishes the run with the uninterrupted losses.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aido::train::{StepMetrics, read_metrics};

fn aido() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aido"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped (the orchestrator runs until interrupted).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orchestrator() -> (Guard, u16) {
    let port = free_port();
    let child = aido()
        .args(["orchestrator", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it accepts connections.
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "orchestrator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (Guard(child), port)
}

fn simulated(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, genes) = (dir.join("sim.h5ad"), dir.join("genes.tsv"));
    let o = aido()
        .args([
            "simulate",
            "--cells",
            "300",
            "--genes",
            "400",
            "--cell-types",
            "4",
            "--seed",
            "3",
            "--output",
        ])
        .arg(&data)
        .arg("--panel-out")
        .arg(&genes)
        .output()
        .unwrap();
    assert!(o.status.success());
    (data, genes)
}

const FLAGS: [&str; 16] = [
    "--preset",
    "tiny",
    "--steps",
    "8",
    "--batch-size",
    "4",
    "--grad-accum",
    "2",
    "--lr",
    "1e-3",
    "--val-every",
    "4",
    "--checkpoint-every",
    "2",
    "--node-timeout",
    "15",
];

fn pretrain(data: &Path, genes: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = aido();
    c.arg("pretrain")
        .arg("--data")
        .arg(data)
        .arg("--genes")
        .arg(genes)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra);
    c
}

/// Node `rank` of 2 (stdout and stderr captured).
fn node(
    data: &Path,
    genes: &Path,
    out: &Path,
    orch: u16,
    rank: u32,
    bind: u16,
    extra: &[&str],
) -> Child {
    let (o, b) = (format!("127.0.0.1:{orch}"), format!("127.0.0.1:{bind}"));
    let r = rank.to_string();
    let mut args = FLAGS.to_vec();
    args.extend([
        "--nodes",
        "2",
        "--node-rank",
        &r,
        "--orchestrator",
        &o,
        "--bind",
        &b,
    ]);
    args.extend(extra);
    pretrain(data, genes, out, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn both(a: Child, b: Child) -> (Output, Output) {
    (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn same(a: &[StepMetrics], b: &[StepMetrics], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-3);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.step, y.step, "{what}");
        assert!(
            close(x.train_loss, y.train_loss),
            "{what}, update {}: {} vs {}",
            x.step,
            x.train_loss,
            y.train_loss
        );
        match (x.val_loss, y.val_loss) {
            (Some(p), Some(q)) => assert!(close(p, q), "{what}, update {}: val {p} vs {q}", x.step),
            (None, None) => {}
            other => panic!("{what}, update {}: validation {other:?}", x.step),
        }
    }
}

#[test]
fn two_nodes_on_loopback_log_the_losses_of_one_process_with_grad_accum_2() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let one = dir.path().join("one");
    let single: Vec<&str> = FLAGS[..14].to_vec();
    ok(&pretrain(&data, &genes, &one, &single).output().unwrap());
    let want = read_metrics(&one.join("metrics.jsonl")).unwrap();
    assert_eq!(want.len(), 9);

    let (_orch, port) = orchestrator();
    let (n0, n1) = (dir.path().join("node0"), dir.path().join("node1"));
    let (a, b) = both(
        node(&data, &genes, &n0, port, 0, free_port(), &[]),
        node(&data, &genes, &n1, port, 1, free_port(), &[]),
    );
    ok(&a);
    ok(&b);
    for n in [&n0, &n1] {
        same(
            &want,
            &read_metrics(&n.join("metrics.jsonl")).unwrap(),
            "node vs single process",
        );
    }

    // Nodes that do not start from the same weights (another seed) are refused.
    let (a, b) = both(
        node(
            &data,
            &genes,
            &dir.path().join("s0"),
            port,
            0,
            free_port(),
            &[],
        ),
        node(
            &data,
            &genes,
            &dir.path().join("s1"),
            port,
            1,
            free_port(),
            &["--seed", "9"],
        ),
    );
    for o in [&a, &b] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains("must start from the same weights"), "{err}");
    }
}

#[test]
fn a_killed_node_stops_the_other_and_resume_on_both_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (data, genes) = simulated(dir.path());
    let one = dir.path().join("one");
    ok(&pretrain(&data, &genes, &one, &FLAGS[..14])
        .output()
        .unwrap());
    let want = read_metrics(&one.join("metrics.jsonl")).unwrap();

    let (orch, port) = orchestrator();
    let (n0, n1) = (dir.path().join("node0"), dir.path().join("node1"));
    let (p0, p1) = (free_port(), free_port());
    let a = node(&data, &genes, &n0, port, 0, p0, &[]);
    let mut b = node(&data, &genes, &n1, port, 1, p1, &[]);
    // Kill node 1 once it has written its checkpoint at update 4.
    let t0 = Instant::now();
    while !n1.join("checkpoints/step-00000004/state.json").exists() {
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        assert!(b.try_wait().unwrap().is_none(), "node 1 finished first");
        std::thread::sleep(Duration::from_millis(5));
    }
    b.kill().unwrap();
    b.wait().unwrap();
    let o = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("multi-node run stopped") && err.contains("--resume"),
        "{err}"
    );
    assert!(err.contains("the last good checkpoint is"), "{err}");

    // The job restarts: a new orchestrator (burn's keeps the failed exchange), and both nodes
    // resume from the same update (node 0 may have checkpointed later than node 1: it is rolled
    // back to node 1's latest; nodes resumed from different updates are refused).
    drop(orch);
    let (_orch, port) = orchestrator();
    let latest = |d: &Path| std::fs::read_to_string(d.join("checkpoints/latest")).unwrap();
    let l1 = latest(&n1);
    std::fs::write(n0.join("checkpoints/latest"), &l1).unwrap();
    let (a, b) = both(
        node(&data, &genes, &n0, port, 0, free_port(), &["--resume"]),
        node(&data, &genes, &n1, port, 1, free_port(), &["--resume"]),
    );
    ok(&a);
    ok(&b);
    for n in [&n0, &n1] {
        same(
            &want,
            &read_metrics(&n.join("metrics.jsonl")).unwrap(),
            "resumed nodes vs single process",
        );
    }
}
