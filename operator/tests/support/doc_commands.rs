//! The shell commands of a Markdown page, run as the page writes them: one section's ```sh
//! blocks, through bash, with `tollbridge`, `kubectl` and `helm` on the PATH and the test
//! cluster's kubeconfig. What a test cannot run as written (a cloud's or kind's own command, a
//! URL off this machine, a port already taken) is named by the test as a skipped line or a
//! replacement, and each one must still be found in the page: a page that changes its commands
//! fails the test rather than silently running less.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cluster::{repo_root, run_captured, Cluster};
use super::helm::{helm_binary, helm_env};

/// Upper bound of one section's commands (a `helm install` waits for the operator's rollout).
const SECTION_TIMEOUT: Duration = Duration::from_secs(360);

/// A Markdown page whose commands a test runs.
pub struct DocPage {
    path: PathBuf,
    text: String,
    /// Lines starting with one of these are not run (each must occur in the page).
    skipped: Vec<&'static str>,
    /// Text replaced before running (each must occur in the page).
    replaced: Vec<(String, String)>,
}

impl DocPage {
    /// `path` relative to the repository root.
    pub fn read(path: &str) -> DocPage {
        let path = repo_root().join(path);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        DocPage::new(path, text)
    }

    /// A page of `text`, named `path` in messages.
    pub fn new(path: PathBuf, text: String) -> DocPage {
        DocPage { path, text, skipped: Vec::new(), replaced: Vec::new() }
    }

    /// Lines starting with `prefix` are left out (a command that needs what the test has not).
    pub fn skip(mut self, prefix: &'static str) -> DocPage {
        self.assert_mentions(prefix);
        self.skipped.push(prefix);
        self
    }

    /// `from` is read as `to` (a URL off this machine, a port, a node's name).
    pub fn replace(mut self, from: impl Into<String>, to: impl Into<String>) -> DocPage {
        let from = from.into();
        self.assert_mentions(&from);
        self.replaced.push((from, to.into()));
        self
    }

    /// `text` occurs in the page's commands (not just its prose).
    fn assert_mentions(&self, text: &str) {
        let in_commands = self.blocks(None).iter().any(|block| block.contains(text));
        assert!(in_commands, "the commands of {} no longer say {text:?}", self.path.display());
    }

    /// The ```sh blocks of the section whose heading starts with `heading` (e.g. `## 2.`), up
    /// to the next heading of the same or a higher level.
    pub fn section_commands(&self, heading: &str) -> String {
        let blocks = self.blocks(Some(heading));
        assert!(!blocks.is_empty(), "{}: section {heading:?} has no sh block", self.path.display());
        blocks.concat()
    }

    /// The shell blocks (```sh, ```bash, ```shell) of the section under `heading`, or of the
    /// whole page. Headings are read outside code blocks only, whatever their fence.
    fn blocks(&self, heading: Option<&str>) -> Vec<String> {
        let level = heading.map_or(0, |h| h.chars().take_while(|c| *c == '#').count());
        let (mut blocks, mut current) = (Vec::new(), None::<String>);
        let mut fence: Option<&str> = None;
        let mut inside = heading.is_none();
        for line in self.text.lines() {
            let trimmed = line.trim();
            if let Some(open) = fence {
                if trimmed == open {
                    fence = None;
                    if let Some(block) = current.take() {
                        blocks.push(block);
                    }
                } else if let Some(block) = &mut current {
                    block.push_str(line);
                    block.push('\n');
                }
                continue;
            }
            if let Some(marker) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
                fence = Some(marker);
                let language = trimmed[3..].split_whitespace().next().unwrap_or_default();
                if inside && matches!(language, "sh" | "bash" | "shell") {
                    current = Some(String::new());
                }
                continue;
            }
            match heading {
                Some(heading) if line.starts_with(heading) => inside = true,
                Some(_) if inside && is_heading_within(line, level) => break,
                _ => {}
            }
        }
        if heading.is_some() && !inside {
            panic!("{}: no section {heading:?}", self.path.display());
        }
        blocks
    }

    /// Runs the section's commands with bash (`set -euo pipefail`) from the repository root;
    /// a command whose comment says `# exit N` must exit with N. Returns stdout; panics with
    /// the whole output when a command fails.
    pub fn run_section(&self, heading: &str, cluster: &Cluster) -> String {
        let script = self.script(&self.section_commands(heading));
        let bin = tool_dir(cluster);
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        // `timeout` ends the whole process group at its deadline (a background job holding the
        // output pipes included), before the harness's own deadline would kill bash alone.
        let deadline = (SECTION_TIMEOUT - Duration::from_secs(30)).as_secs().to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", &deadline, "bash", "-c", &script])
            .current_dir(repo_root())
            .env("PATH", path)
            .env("KUBECONFIG", cluster.kubeconfig());
        for (name, value) in helm_env() {
            cmd.env(name, value);
        }
        let what = format!("{} {heading}", self.path.display());
        let out = run_captured(&mut cmd, None, SECTION_TIMEOUT, &what);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what} failed ({}):\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `line` with every replacement made in one pass (a replacement's text is not replaced
    /// again by another).
    fn replaced_in(&self, line: &str) -> String {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        'scan: while !rest.is_empty() {
            for (from, to) in &self.replaced {
                if let Some(after) = rest.strip_prefix(from.as_str()) {
                    out.push_str(to);
                    rest = after;
                    continue 'scan;
                }
            }
            let next = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..next]);
            rest = &rest[next..];
        }
        out
    }

    /// The bash script for `commands`: skipped lines left out, replacements made, expected
    /// exit codes checked, background jobs stopped at the end.
    fn script(&self, commands: &str) -> String {
        let mut script = String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n");
        for line in logical_lines(commands) {
            if self.skipped.iter().any(|prefix| line.trim_start().starts_with(prefix)) {
                continue;
            }
            let line = self.replaced_in(&line);
            script.push_str(&format!("printf '+ %s\\n' '{}' >&2\n", line.replace('\'', r"'\''")));
            match expected_exit(&line) {
                Some(code) => script.push_str(&format!(
                    "set +e\n{line}\ncode=$?\nset -e\n[ \"$code\" -eq {code} ] || {{ echo \"exit $code, the page says {code}\" >&2; exit 1; }}\n"
                )),
                None => {
                    script.push_str(&line);
                    script.push('\n');
                }
            }
        }
        script
    }
}

fn is_heading_within(line: &str, level: usize) -> bool {
    let hashes = line.chars().take_while(|c| *c == '#').count();
    (1..=level).contains(&hashes) && line[hashes..].starts_with(' ')
}

/// Lines joined where they end in `\`; blank lines and whole-line comments dropped.
pub fn logical_lines(commands: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in commands.lines() {
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued);
            continue;
        }
        current.push_str(line);
        let whole = std::mem::take(&mut current);
        let trimmed = whole.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            lines.push(whole);
        }
    }
    lines
}

/// `N` of a trailing `# exit N` comment.
pub fn expected_exit(line: &str) -> Option<i32> {
    let comment = &line[line.rfind(" # ")? + 3..];
    comment.trim_start().strip_prefix("exit ")?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A directory holding `tollbridge`, `kubectl` and `helm` as the tests run them (under the
/// build's own scratch directory, made again by each test process).
fn tool_dir(cluster: &Cluster) -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("doc-commands-bin");
        std::fs::create_dir_all(&dir).expect("tool dir");
        let tools: [(&str, &Path); 3] = [
            ("tollbridge", Path::new(env!("CARGO_BIN_EXE_tollbridge"))),
            ("kubectl", cluster.kubectl_path()),
            ("helm", helm_binary()),
        ];
        for (name, target) in tools {
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            symlink(target, &link).expect("tool link");
        }
        dir
    })
}
