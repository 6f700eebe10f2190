//! The log is readable by others: pyarrow opens a segment written by `wharf` (a commit,
//! written out by `wharf store segment`, and a compaction, a file in the store directory) and
//! finds the records, schema and metadata `log/README.md` documents.

use std::process::Command;

use wharf_tests::wharf;

#[test]
fn pyarrow_reads_a_segment() {
    let Some(python) = std::env::var_os("WHARF_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set WHARF_PYTHON (see .ci/run)"
        );
        eprintln!("WHARF_PYTHON is not set: skipping the pyarrow check");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let mut child = wharf(&url)
        .args(["append", "readings"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "t=21.5\nt=21.7\nt=22.0").expect("write");
    }
    assert!(child.wait_with_output().expect("wait").status.success());
    let read = |file: &std::path::Path, expected: &[&str]| {
        let out = Command::new(&python)
            .arg(wharf_tests::python_script("read_segment.py"))
            .arg(file)
            .arg("readings")
            .args(expected)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "pyarrow check of {} failed: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
    };
    // On the local filesystem a commit is an entry of the journal: `wharf store segment` writes
    // it out. One writer with concurrency 1 appends one record per segment.
    let first = dir.path().join("first.arrow");
    let out = wharf(&url)
        .args(["store", "segment", "1"])
        .output()
        .expect("store segment");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&first, &out.stdout).expect("write");
    read(&first, &["t=21.5"]);
    // A compaction is the form history is kept in, and a file of its own: pyarrow opens it in
    // the store directory.
    let config = dir.path().join("compact-now.toml");
    std::fs::write(&config, "[log]\ncompaction_min_age = 0\n").expect("config");
    let out = wharf(&url)
        .arg("--config")
        .arg(&config)
        .args(["store", "compact"])
        .output()
        .expect("compact");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("a compaction is a file in segments/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "arrow"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    read(&segments[0], &["t=21.5", "t=21.7", "t=22.0"]);
    let out = wharf(&url)
        .args(["store", "segment", "99"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "no segment 99");
}
