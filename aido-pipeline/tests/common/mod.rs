//! Shared by the pipeline tests: a tiny random checkpoint written in place (no files from
//! outside the repository), simulated counts, and a local stand-in for the hub's HTTP API.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aido_model::{AidoCellConfig, Cpu, save_checkpoint};
use aido_tokenize::GeneVocab;
use aido_tokenize::simulate::{SimulationConfig, simulate, synthetic_gene_names};

/// A tiny checkpoint over a 24-gene panel (with its genes.tsv) in `dir`.
pub fn tiny_checkpoint(dir: &Path, with_genes: bool) -> Vec<String> {
    let genes = synthetic_gene_names(24);
    let cfg = AidoCellConfig::new(genes.len(), 16, 2, 2, 32);
    let model = cfg.init::<Cpu>(false, &Default::default());
    save_checkpoint(&model, &cfg, dir).unwrap();
    if with_genes {
        GeneVocab::from_names(genes.clone())
            .unwrap()
            .write_tsv(dir.join("genes.tsv"))
            .unwrap();
    }
    genes
}

/// Simulated raw counts over `genes`: (CSR indptr, indices, data), `n` cells.
pub fn counts(genes: &[String], n: usize) -> (Vec<i64>, Vec<i32>, Vec<f32>) {
    let sim = simulate(&SimulationConfig::new(n, 2, 3), genes.to_vec()).unwrap();
    let c = sim.counts;
    (
        c.indptr.iter().map(|&p| p as i64).collect(),
        c.indices.iter().map(|&j| j as i32).collect(),
        c.data.clone(),
    )
}

/// The files of one model revision served by [`Hub`].
#[derive(Clone)]
pub struct Served {
    pub commit: String,
    pub files: HashMap<String, Vec<u8>>,
}

/// A minimal stand-in for the hub's HTTP API on 127.0.0.1 (one request per connection):
/// `GET /api/models/ORG/NAME/revision/REV` (the listing) and
/// `GET /ORG/NAME/resolve/REV/FILE` with `Range` (206, `X-Repo-Commit`, `ETag`,
/// `Content-Range`), and `X-Error-Code` 404s, as the hub answers them. With `truncate` set, a
/// file whose name is in it is sent with its full `Content-Length` but only half its bytes,
/// then the connection is dropped.
pub struct Hub {
    pub endpoint: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub truncate: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    pub fn start(repo: &str, revisions: HashMap<String, Served>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let truncate: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let (req_log, trunc) = (requests.clone(), truncate.clone());
        let repo = repo.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut range_start = None;
                let mut range_end: Option<usize> = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(r) = lower.strip_prefix("range: bytes=") {
                        let (a, b) = r.trim().split_once('-').unwrap_or((r.trim(), ""));
                        range_start = a.parse::<usize>().ok();
                        range_end = b.parse::<usize>().ok().map(|e| e + 1);
                    }
                }
                req_log.lock().unwrap().push(path.clone());
                let not_found = |s: &mut std::net::TcpStream, code: &str| {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nX-Error-Code: {code}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                };
                let api_prefix = format!("/api/models/{repo}/revision/");
                let file_prefix = format!("/{repo}/resolve/");
                if let Some(rev) = path.strip_prefix(&api_prefix) {
                    match revisions.get(rev) {
                        Some(s) => {
                            let siblings: Vec<String> = s
                                .files
                                .keys()
                                .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                                .collect();
                            let body = format!(
                                "{{\"sha\":\"{}\",\"siblings\":[{}]}}",
                                s.commit,
                                siblings.join(",")
                            );
                            let _ = write!(
                                stream,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        None => not_found(&mut stream, "RevisionNotFound"),
                    }
                } else if let Some(rest) = path.strip_prefix(&file_prefix) {
                    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
                    let Some(s) = revisions.get(rev) else {
                        not_found(&mut stream, "RevisionNotFound");
                        continue;
                    };
                    let Some(bytes) = s.files.get(file) else {
                        not_found(&mut stream, "EntryNotFound");
                        continue;
                    };
                    let start = range_start.unwrap_or(0).min(bytes.len());
                    let end = range_end.unwrap_or(bytes.len()).min(bytes.len());
                    let body = &bytes[start..end.max(start)];
                    let etag = format!("{:016x}", fnv(bytes));
                    let _ = write!(
                        stream,
                        "HTTP/1.1 206 Partial Content\r\nX-Repo-Commit: {}\r\nETag: \"{etag}\"\r\nContent-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        s.commit,
                        (start + body.len()).saturating_sub(1),
                        bytes.len(),
                        body.len()
                    );
                    if body.len() > 1 && trunc.lock().unwrap().iter().any(|t| t == file) {
                        let _ = stream.write_all(&body[..body.len() / 2]);
                        let _ = stream.flush();
                        continue; // dropped mid-body
                    }
                    let _ = stream.write_all(body);
                } else {
                    not_found(&mut stream, "RepoNotFound");
                }
                let _ = stream.flush();
                let mut sink = Vec::new();
                let _ = reader.read_to_end(&mut sink);
            }
        });
        Hub {
            endpoint,
            requests,
            truncate,
        }
    }
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every file of a checkpoint folder, by name.
pub fn folder_files(dir: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Lays out `files` as `huggingface_hub` caches them: blobs, a snapshot of links, a ref.
pub fn cache_model(
    cache: &Path,
    repo: &str,
    rev: &str,
    commit: &str,
    files: &HashMap<String, Vec<u8>>,
) -> PathBuf {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(commit);
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    for (name, bytes) in files {
        let blob = root.join("blobs").join(format!("{:016x}", fnv(bytes)));
        std::fs::write(&blob, bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{:016x}", fnv(bytes)), snap.join(name))
            .unwrap();
    }
    std::fs::write(root.join("refs").join(rev), commit).unwrap();
    snap
}
