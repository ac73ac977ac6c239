//! Finding the `item-api` and `edge-proxy` programs for `hanko-dev up`:
//! they sit next to `hanko-dev` in the same Cargo profile directory, and
//! are built there when missing or when `up` was started by `cargo run`.
//!
//! Building is skipped with `--no-build` (or `HANKO_DEV_NO_BUILD=1`), which
//! suits tests and installs that copy the three programs together.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::children::say;

/// The workspace this binary was built from; `cargo build` runs here.
const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The programs `up` starts.
pub struct StackBinaries {
    /// This program, for `hanko-dev serve`.
    pub hanko_dev: PathBuf,
    /// The item API.
    pub item_api: PathBuf,
    /// The proxy.
    pub edge_proxy: PathBuf,
}

/// Whether `up` may run `cargo build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPolicy {
    /// Build when the programs are missing or `up` runs under `cargo run`.
    Auto,
    /// Use the programs next to `hanko-dev` as they are.
    Never,
}

impl StackBinaries {
    /// Locates the programs next to the running executable, building them
    /// first as `policy` allows.
    ///
    /// # Errors
    ///
    /// Fails when a program is missing and cannot be built, with the exact
    /// command to run.
    pub fn locate(policy: BuildPolicy) -> Result<Self> {
        let hanko_dev = std::env::current_exe().context("finding the hanko-dev executable")?;
        let dir = hanko_dev
            .parent()
            .context("the hanko-dev executable has no parent directory")?
            .to_path_buf();
        let binaries = Self {
            item_api: dir.join("item-api"),
            edge_proxy: dir.join("edge-proxy"),
            hanko_dev: hanko_dev.clone(),
        };
        let missing = !binaries.item_api.is_file() || !binaries.edge_proxy.is_file();
        // `cargo run` sets CARGO; building again then picks up source
        // changes, and costs about a second when nothing changed.
        let under_cargo = std::env::var_os("CARGO").is_some();
        let build = cargo_build_command(&dir);

        match policy {
            BuildPolicy::Never if missing => bail!(
                "item-api or edge-proxy is missing next to {}; build them with `{}` (run in {})",
                hanko_dev.display(),
                display_command(&build),
                workspace_dir().display()
            ),
            BuildPolicy::Never => {}
            BuildPolicy::Auto if missing || under_cargo => run_build(build)?,
            BuildPolicy::Auto => {}
        }
        Ok(binaries)
    }
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(WORKSPACE_DIR)
}

/// Builds the two programs into the profile directory `dir`
/// (`<target>/<profile>`), with the same profile.
fn cargo_build_command(dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.arg("build");
    match dir.file_name().and_then(|name| name.to_str()) {
        Some("release") => {
            command.arg("--release");
        }
        Some("debug") | None => {}
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    command.args(["-p", "item-api", "-p", "edge-proxy"]);
    if let Some(target_dir) = dir.parent() {
        // NOTE: a build with `--target <triple>` puts the profile directory
        // one level deeper. Such a layout is not recognised here, so the
        // programs would land in the default place instead.
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    command.current_dir(workspace_dir());
    command
}

fn run_build(mut command: Command) -> Result<()> {
    let shown = display_command(&command);
    if !workspace_dir().join("Cargo.toml").is_file() {
        bail!(
            "item-api or edge-proxy is missing and the hanko-edge sources at {} are gone; \
             build them in a checkout with `{shown}`",
            workspace_dir().display()
        );
    }
    say(&format!("building item-api and edge-proxy: {shown}"));
    let status = command
        .status()
        .with_context(|| format!("running `{shown}` failed; is cargo installed?"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}; its output is above");
    }
    Ok(())
}

fn display_command(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    format!("{program} {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_dir_builds_release() {
        let command = cargo_build_command(Path::new("/w/target/release"));

        assert_eq!(
            display_command(&command),
            "cargo build --release -p item-api -p edge-proxy".replace("cargo", &display_program())
        );
        let target = command
            .get_envs()
            .find(|(key, _)| *key == "CARGO_TARGET_DIR")
            .and_then(|(_, value)| value);
        assert_eq!(target, Some(std::ffi::OsStr::new("/w/target")));
    }

    #[test]
    fn debug_dir_builds_debug_and_custom_profile_is_named() {
        let debug = display_command(&cargo_build_command(Path::new("/w/target/debug")));
        let custom = display_command(&cargo_build_command(Path::new("/w/target/bench")));

        assert!(!debug.contains("--release"), "{debug}");
        assert!(custom.contains("--profile bench"), "{custom}");
    }

    fn display_program() -> String {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Path::new(&cargo)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
