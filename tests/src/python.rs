//! Compatibility with real clients: an official Python SDK (`openai`, `anthropic`) driving the HTTP door.
//!
//! [`check_against_door`] installs the package into a virtual environment kept under the target directory
//! (`python-<package>/`, reused while it holds a working install), starts a node with the http role in front of the
//! mock provider, and runs the package's script in `tests/python/` against it (the door's address and keys in
//! `SWITCHYARD_BASE_URL`, `SWITCHYARD_API_KEY` and `SWITCHYARD_LIMITED_KEY`, the last allowed the route `solo`
//! only), once with the door handing queries to its router in process and once over NATS. The script exits non-zero on its first failed check and prints
//! `checks passed` at the end.
//!
//! It fails, loudly, when Python, `venv` or `pip` do not work; it is skipped only when `SWITCHYARD_SKIP_PYTHON=1`
//! is set explicitly.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::door::{Door, KEY, LIMITED_KEY, Mode};

/// One SDK's compatibility check.
#[derive(Debug, Clone, Copy)]
pub struct Sdk {
    /// The package, as pip installs it and Python imports it.
    pub package: &'static str,
    /// The script, in `tests/python/`.
    pub script: &'static str,
    /// What the SDK's base URL adds to the door's address (`/v1` for OpenAI's, nothing for Anthropic's).
    pub base_path: &'static str,
    /// The environment variables the SDK would read its address or key from: removed, so the SDK talks to the
    /// door only, whatever the environment says.
    pub sdk_env: &'static [&'static str],
}

/// Runs `sdk`'s script against a door in process and over NATS; `Ok` when every check passed (or Python tests are
/// skipped explicitly).
pub async fn check_against_door(sdk: Sdk) -> anyhow::Result<()> {
    if std::env::var("SWITCHYARD_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("SWITCHYARD_SKIP_PYTHON=1: the {}-package compatibility test is skipped", sdk.package);
        return Ok(());
    }
    let python = tokio::task::spawn_blocking(move || python_with(sdk.package)).await??;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(sdk.script);
    for mode in [Mode::Local, Mode::Nats] {
        let door = Door::start(mode).await?;
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .env("SWITCHYARD_BASE_URL", format!("{}{}", door.base, sdk.base_path))
            .env("SWITCHYARD_API_KEY", KEY)
            .env("SWITCHYARD_LIMITED_KEY", LIMITED_KEY)
            .env("NO_PROXY", "127.0.0.1,localhost");
        for name in sdk.sdk_env {
            command.env_remove(name);
        }
        let output = tokio::task::spawn_blocking(move || run(&mut command)).await?;
        door.shutdown().await;
        let text = output.with_context(|| format!("{mode:?}"))?;
        eprintln!("{mode:?}:\n{text}");
        if !text.contains("checks passed") {
            bail!("{mode:?}: the script did not pass its checks:\n{text}");
        }
    }
    Ok(())
}

/// Where `package`'s virtual environment lives: `<target>/python-<package>`, next to the build.
fn venv_dir(package: &str) -> anyhow::Result<PathBuf> {
    // The test binary is `<target>/<profile>/deps/<name>`.
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).context("the test binary is inside a target directory")?;
    Ok(target.join(format!("python-{package}")))
}

/// Runs `command`, failing with its output when it does not succeed.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("{command:?} failed ({}):\n{text}", output.status);
    }
    Ok(text)
}

/// The venv's python with `package` importable, created and installed on first use.
fn python_with(package: &str) -> anyhow::Result<PathBuf> {
    let dir = venv_dir(package)?;
    let python = dir.join("bin").join("python");
    let works = |python: &Path| run(Command::new(python).args(["-c", &format!("import {package}")])).is_ok();
    if python.exists() && works(&python) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&interpreter).arg("-m").arg("venv").arg(&dir))
        .context("creating the virtual environment (set SWITCHYARD_SKIP_PYTHON=1 to skip this test)")?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", package]))
        .with_context(|| format!("installing `{package}` with pip (set SWITCHYARD_SKIP_PYTHON=1 to skip this test)"))?;
    if !works(&python) {
        bail!("`{package}` is not importable after installing it into {}", dir.display());
    }
    Ok(python)
}
