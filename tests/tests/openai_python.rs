//! Compatibility with a real client: the official `openai` Python package against the HTTP door.
//!
//! `switchyard_e2e::python` installs `openai` into a virtual environment under the target directory
//! (`python-openai/`) and runs `tests/python/test_openai_compat.py` against a door in process and over NATS: a
//! completion, a stream, errors (`openai.NotFoundError`, `AuthenticationError`, `BadRequestError`), a tool-less
//! multi-turn conversation, the model list. It fails when Python or pip do not work; `SWITCHYARD_SKIP_PYTHON=1`
//! skips it explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_e2e::python::{Sdk, check_against_door};

#[tokio::test]
async fn the_official_openai_package_works_against_the_door() {
    let sdk = Sdk {
        package: "openai",
        script: "test_openai_compat.py",
        base_path: "/v1",
        sdk_env: &["OPENAI_BASE_URL", "OPENAI_API_KEY"],
    };
    if let Err(error) = check_against_door(sdk).await {
        panic!("{error:#}");
    }
}
