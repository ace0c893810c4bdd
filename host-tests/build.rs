//! Builds the walrestore component (the workspace's root crate) for `wasm32-wasip2` and tells
//! the host crate where it is (`WALRESTORE_COMPONENT`), so that `cargo build`, `cargo run` and
//! `cargo test` of the host work on a fresh machine with nothing set up by hand.
//!
//! The component is always built in release mode, into its own target directory: a nested
//! cargo must not share the outer build's target directory (it holds the lock).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for path in ["src", "wit", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=WALRESTORE_COMPONENT_OVERRIDE");

    // A prebuilt component may be supplied instead (packaging, or a machine without rustup).
    if let Some(path) = std::env::var_os("WALRESTORE_COMPONENT_OVERRIDE") {
        println!(
            "cargo:rustc-env=WALRESTORE_COMPONENT={}",
            Path::new(&path).display()
        );
        return;
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target();

    let target_dir = root.join("target").join("component");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "walrestore",
            "--lib",
        ])
        .args(["--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the outer (native) build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo to build the walrestore component");
    assert!(
        status.success(),
        "building the walrestore component for {TARGET} failed"
    );

    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("walrestore.wasm");
    assert!(wasm.exists(), "component not found at {}", wasm.display());
    println!("cargo:rustc-env=WALRESTORE_COMPONENT={}", wasm.display());
}

/// Installs the wasm32-wasip2 standard library with rustup when it is missing: a fresh machine
/// has the toolchain but not this target, and `RUSTUP_AUTO_INSTALL=0` keeps
/// `rust-toolchain.toml` from installing it.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot.join("lib/rustlib").join(TARGET).exists()
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!(
            "the {TARGET} target is not installed and `rustup target add {TARGET}` failed; \
             install it, or set WALRESTORE_COMPONENT_OVERRIDE to a prebuilt component"
        ),
    }
}
