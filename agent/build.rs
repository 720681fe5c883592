//! Records the target triple for `shoal --version`: `std::env::consts::ARCH`
//! says "arm" for both ARMv6 (Pi Zero W) and ARMv7 builds.
//!
//! Release binaries for gnu/linux also leave out the DWARF unwind tables
//! (`.eh_frame`, `.eh_frame_hdr`, `.gcc_except_table`): 15% of the aarch64
//! binary (about 300 KB of 1.9 MB). The release profile aborts on panic,
//! so nothing unwinds; the tables served only `RUST_BACKTRACE`, whose
//! frames in a stripped binary have no names. A panic still prints its
//! message and source location. (32-bit ARM unwinds with `.ARM.exidx`,
//! which stays: about 45 KB.) `cargo bench` builds inherit the release
//! profile and get the same. Set `SHOAL_KEEP_UNWIND=1` when building to keep
//! them (for `perf --call-graph dwarf`, or a linker that takes no GNU linker
//! script, such as mold).

use std::env;

fn main() {
    let target = env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SHOAL_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SHOAL_KEEP_UNWIND");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let release = var("PROFILE") == "release";
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let keep = matches!(var("SHOAL_KEEP_UNWIND").as_str(), "1" | "true" | "yes");
    if !(release && gnu_linux) || keep {
        return;
    }
    let Some(out) = env::var_os("OUT_DIR") else {
        return;
    };
    let script = std::path::Path::new(&out).join("no-unwind-tables.ld");
    let text =
        "SECTIONS { /DISCARD/ : { *(.eh_frame) *(.eh_frame_hdr) *(.gcc_except_table .gcc_except_table.*) } }\nINSERT AFTER .rodata;\n";
    if let Err(e) = std::fs::write(&script, text) {
        println!(
            "cargo:warning=unwind tables kept: cannot write {}: {e}",
            script.display()
        );
        return;
    }
    // One argument each: a comma in the path would split a `-Wl,` list.
    let path = script.display().to_string();
    for arg in ["-Xlinker", "-T", "-Xlinker", &path] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
