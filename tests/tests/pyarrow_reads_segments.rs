//! The log is readable by others: pyarrow opens a segment written by `wharf` and finds the
//! records, schema and metadata `log/README.md` documents.

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
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .expect("segments dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segments.sort();
    // One writer with concurrency 1 appends one record per segment: read the first one.
    let script = wharf_tests::python_script("read_segment.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&segments[0])
        .args(["readings", "t=21.5"])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pyarrow check failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}
