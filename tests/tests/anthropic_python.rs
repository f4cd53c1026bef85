//! Compatibility with a real client: the official `anthropic` Python package against the door's `/v1/messages`.
//!
//! `switchyard_e2e::python` installs `anthropic` into a virtual environment under the target directory
//! (`python-anthropic/`) and runs `tests/python/test_anthropic_compat.py` against a door in process and over NATS:
//! a message, a stream (raw events and the SDK's stream helper), errors (`anthropic.NotFoundError`,
//! `AuthenticationError`, `BadRequestError`, `PermissionDeniedError`), a multi-turn conversation with a system
//! prompt. It fails when Python or pip do not work; `SWITCHYARD_SKIP_PYTHON=1` skips it explicitly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_e2e::python::{Sdk, check_against_door};

#[tokio::test]
async fn the_official_anthropic_package_works_against_the_door() {
    let sdk = Sdk {
        package: "anthropic",
        script: "test_anthropic_compat.py",
        // The SDK adds `/v1/messages` itself.
        base_path: "",
        sdk_env: &["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"],
    };
    if let Err(error) = check_against_door(sdk).await {
        panic!("{error:#}");
    }
}
