//! The fuzz targets (`fuzz/fuzz_targets/*.rs`, exactly as cargo-fuzz
//! builds them) compiled into an ordinary test of the workspace, so that
//! `cargo test` fails when a target no longer compiles or no longer runs
//! its kept seeds and corpus: the fuzz crate itself needs cargo-fuzz and a
//! nightly compiler, and nothing else builds it (a target once stopped
//! compiling unnoticed).
//!
//! A test crate that includes this file names itself `libfuzzer_sys`
//! (`extern crate self as libfuzzer_sys;` at its root) and re-exports
//! `arbitrary` there if a target takes typed input: then a target's
//! `use libfuzzer_sys::fuzz_target;` finds the macro below, which makes its
//! body a `pub fn run(bytes: &[u8])` that takes the input as libFuzzer
//! hands it over (typed input built from the bytes as libfuzzer-sys builds
//! it: `arbitrary_take_rest`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[macro_export]
macro_rules! fuzz_target {
    (|$data:ident: &[u8]| $body:block) => {
        /// The target's body on one input.
        pub fn run(bytes: &[u8]) {
            let $data: &[u8] = bytes;
            $body
        }
    };
    (|$data:ident: $dty:ty| $body:block) => {
        /// The target's body on one input, made of the bytes as
        /// libfuzzer-sys makes it; false when they make none.
        pub fn run(bytes: &[u8]) -> bool {
            use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
            let Ok($data) = <$dty as Arbitrary>::arbitrary_take_rest(Unstructured::new(bytes))
            else {
                return false;
            };
            // A closure, for a body that returns early.
            let body = move || $body;
            body();
            true
        }
    };
}

/// Kept inputs taken from each of a target's directories: a bounded run.
pub const MOST: usize = 64;

/// Inputs for every target besides its own: empty, short, long, every byte
/// value, and 32 more made by a fixed generator (the same every run).
pub fn extra() -> Vec<Vec<u8>> {
    let mut all = vec![
        Vec::new(),
        vec![0],
        vec![0xff; 7],
        vec![0; 4096],
        (0..=255).collect(),
        b"CWAC\x00\xc9\x00\x00\x00\x00".to_vec(),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..32usize {
        let input = (0..n * 17 % 700)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        all.push(input);
    }
    all
}

/// Inputs kept for `target`: its seeds (`fuzz/seeds/<target>`) and its kept
/// corpus (`fuzz/corpus/<target>`), in name order, at most `most` of each
/// (a bounded run), then `extra`.
pub fn inputs(target: &str, most: usize, extra: &[Vec<u8>]) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("fuzz"))
        .find(|d| d.join("fuzz_targets").is_dir())
        .expect("the fuzz directory");
    let mut all = Vec::new();
    for kind in ["seeds", "corpus"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        for f in files.into_iter().take(most) {
            let bytes = std::fs::read(&f).expect("a kept input");
            all.push((f, bytes));
        }
    }
    for (i, e) in extra.iter().enumerate() {
        all.push((PathBuf::from(format!("<extra input {i}>")), e.clone()));
    }
    all
}

/// `run` over every input of [`inputs`]; the test fails naming the first
/// input it panics on. What each run returned, in order (kept inputs
/// first).
pub fn run_all<R>(target: &str, most: usize, extra: &[Vec<u8>], run: fn(&[u8]) -> R) -> Vec<R> {
    inputs(target, most, extra)
        .iter()
        .map(|(path, bytes)| {
            std::panic::catch_unwind(|| run(bytes))
                .unwrap_or_else(|_| panic!("fuzz target {target} panicked on {}", path.display()))
        })
        .collect()
}
