//! Compatibility with a real client: the official `openai` Python package against the HTTP door.
//!
//! The test installs `openai` into a virtual environment kept under the target directory (`python-openai/`,
//! reused while it holds a working install), starts a node with the http role in front of the mock provider, and
//! runs `tests/python/test_openai_compat.py` against it, once with the door handing queries to its router in
//! process and once over NATS: a completion, a stream, errors (`openai.NotFoundError`, `AuthenticationError`,
//! `BadRequestError`), a tool-less multi-turn conversation, the model list.
//!
//! It fails, loudly, when Python, `venv` or `pip` do not work; it is skipped only when `SWITCHYARD_SKIP_PYTHON=1`
//! is set explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use switchyard_e2e::door::{Door, KEY, Mode};

/// Where the virtual environment lives: `<target>/python-openai`, next to the build.
fn venv_dir() -> anyhow::Result<PathBuf> {
    // The test binary is `<target>/<profile>/deps/<name>`.
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).context("the test binary is inside a target directory")?;
    Ok(target.join("python-openai"))
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

/// The venv's python with `openai` importable, created and installed on first use.
fn python_with_openai() -> anyhow::Result<PathBuf> {
    let dir = venv_dir()?;
    let python = dir.join("bin").join("python");
    let works = |python: &Path| run(Command::new(python).args(["-c", "import openai"])).is_ok();
    if python.exists() && works(&python) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let interpreter = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&interpreter).arg("-m").arg("venv").arg(&dir))
        .context("creating the virtual environment (set SWITCHYARD_SKIP_PYTHON=1 to skip this test)")?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "openai"]))
        .context("installing `openai` with pip (set SWITCHYARD_SKIP_PYTHON=1 to skip this test)")?;
    if !works(&python) {
        bail!("`openai` is not importable after installing it into {}", dir.display());
    }
    Ok(python)
}

#[tokio::test]
async fn the_official_openai_package_works_against_the_door() {
    if std::env::var("SWITCHYARD_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("SWITCHYARD_SKIP_PYTHON=1: the openai-package compatibility test is skipped");
        return;
    }
    let python = tokio::task::spawn_blocking(python_with_openai).await.unwrap().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("test_openai_compat.py");
    for mode in [Mode::Local, Mode::Nats] {
        let door = Door::start(mode).await.unwrap();
        let mut command = Command::new(&python);
        command
            .arg(&script)
            .env("SWITCHYARD_BASE_URL", format!("{}/v1", door.base))
            .env("SWITCHYARD_API_KEY", KEY)
            // The SDK must talk to the door only, whatever the environment says.
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .env("NO_PROXY", "127.0.0.1,localhost");
        let output = tokio::task::spawn_blocking(move || run(&mut command)).await.unwrap();
        door.shutdown().await;
        match output {
            Ok(text) => {
                eprintln!("{mode:?}:\n{text}");
                assert!(text.contains("checks passed"), "{mode:?}: {text}");
            }
            Err(error) => panic!("{mode:?}: {error:#}"),
        }
    }
}
