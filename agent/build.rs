//! Records the target triple for `shoal --version`: `std::env::consts::ARCH`
//! says "arm" for both ARMv6 (Pi Zero W) and ARMv7 builds.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SHOAL_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
