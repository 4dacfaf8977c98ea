//! Compiles the C eBPF programs with clang into `$OUT_DIR/nettrace.bpf.o`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = manifest.join("src/nettrace.bpf.c");
    let include = manifest.join("include");
    for f in [
        "src/nettrace.bpf.c",
        "include/nt_abi.h",
        "include/nt_core.h",
    ] {
        println!("cargo:rerun-if-changed={}", manifest.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // The multiarch include dir holds asm/types.h, needed by linux/types.h.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let (multiarch, target_arch) = match arch.as_str() {
        "aarch64" => ("aarch64-linux-gnu", "arm64"),
        _ => ("x86_64-linux-gnu", "x86"),
    };
    let obj = out.join("nettrace.bpf.o");
    let status = Command::new(&clang)
        // v3: the atomic compare-and-swap and fetch-and-add of the rate limit (Linux 5.12+).
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg(format!("-D__TARGET_ARCH_{target_arch}"))
        .arg("-I")
        .arg(&include)
        .arg("-I")
        .arg(format!("/usr/include/{multiarch}"))
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed ({s}) compiling {}", src.display()),
        Err(e) => panic!(
            "cannot run `{clang}` ({e}): install clang and libbpf-dev (`./dev deps`), or set CLANG"
        ),
    }
}
