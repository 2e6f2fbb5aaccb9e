//! Running a command with a deadline, its output captured or logged to a file.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Lines of the log an error of [`run_logged`] ends with.
const TAIL_LINES: usize = 40;

/// Runs `cmd` with stdout and stderr written to `log`; an error holding the end of the log
/// when it fails or runs longer than `timeout` (then it is killed). `what` names the command
/// in the error.
pub fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration, what: &str) -> Result<(), String> {
    let file = fs::File::create(log).map_err(|e| format!("{what}: cannot create {}: {e}", log.display()))?;
    let file2 = file.try_clone().map_err(|e| format!("{what}: cannot duplicate {}: {e}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    let tail = || {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    };
    match wait_deadline(&mut child, timeout).map_err(|e| format!("{what}: {e}"))? {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{what} failed ({status}); end of {}:\n{}", log.display(), tail())),
        None => {
            Err(format!("{what} did not finish within {timeout:?}; end of {}:\n{}", log.display(), tail()))
        }
    }
}

/// Runs `cmd` with `stdin` fed to it and its output captured; after `timeout` it is killed and
/// the returned output has a failed status and a stderr saying so. Panics when it cannot run.
pub fn run_captured(cmd: &mut Command, stdin: Option<&str>, timeout: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_owned();
            // A child that exits without reading gives a broken pipe: not an error here.
            Some(thread::spawn(move || drop(pipe.write_all(input.as_bytes()))))
        }
        _ => None,
    };
    // Read on their own threads: a child filling one pipe while nobody reads it would block.
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_deadline(&mut child, timeout).unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let mut stderr = stderr.join().unwrap_or_default();
    let status = match status {
        Some(status) => status,
        None => {
            stderr.extend_from_slice(format!("\n[harness] {what}: killed after {timeout:?}\n").as_bytes());
            child.wait().unwrap_or_else(|e| panic!("wait for {what}: {e}"))
        }
    };
    Output { status, stdout, stderr }
}

/// Waits for `child` until `timeout`: `Some(status)` when it exited, `None` when it was
/// killed at the deadline (and reaped).
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("cannot poll the process: {e}"))? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `pipe` to its end on a new thread.
fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_feeds_stdin() {
        let out = run_captured(
            Command::new("sh").args(["-c", "cat; echo err >&2"]),
            Some("in"),
            Duration::from_secs(10),
            "sh",
        );
        assert!(out.status.success());
        assert_eq!(out.stdout, b"in");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn kills_a_command_past_its_deadline() {
        let started = Instant::now();
        let out = run_captured(Command::new("sleep").arg("30"), None, Duration::from_millis(200), "sleep");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("sleep: killed after"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_failed_logged_command_reports_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let err = run_logged(
            Command::new("sh").args(["-c", "echo first; echo last; exit 3"]),
            &log,
            Duration::from_secs(10),
            "sh",
        )
        .unwrap_err();
        assert!(err.starts_with("sh failed"), "{err}");
        assert!(err.ends_with("first\nlast"), "{err}");
        run_logged(&mut Command::new("true"), &log, Duration::from_secs(10), "true").unwrap();
    }
}
