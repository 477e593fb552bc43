//! Every fuzz target of `fuzz/` runs clean for a few seconds each (`MOSAIC_FUZZ_SECS=N` for
//! N seconds each; docs/testing.md "Fuzzing").

use std::time::Duration;

use mosaic_fuzz_runner::{TARGETS, build, run};

#[test]
fn every_fuzz_target_runs_clean_for_its_time() {
    let secs = std::env::var("MOSAIC_FUZZ_SECS")
        .ok()
        .map_or(3, |secs| secs.parse().expect("MOSAIC_FUZZ_SECS is a number of seconds"));
    let work_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let bin_dir = build(&cargo, &work_dir.join("target")).unwrap_or_else(|error| panic!("{error}"));
    for target in TARGETS {
        let started = std::time::Instant::now();
        run(&bin_dir, &work_dir, target, Duration::from_secs(secs))
            .unwrap_or_else(|error| panic!("{error}"));
        eprintln!("{target}: clean for {:?}", started.elapsed());
    }
}
