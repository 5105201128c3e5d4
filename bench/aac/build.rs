//! For the static aarch64-musl build with the FDK encoder: fdk-aac-sys's build script asks for
//! `-lstdc++` on every Linux target, and there is no libstdc++ for musl in Debian. Compiled with
//! -fno-exceptions -fno-rtti, the FDK library calls nothing from the C++ runtime (only libc:
//! malloc/calloc/free, mem*, str*, stdio), so an empty archive satisfies the link. This puts one
//! in OUT_DIR and adds it to the library search path, for musl targets only.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let fdk = std::env::var_os("CARGO_FEATURE_FDK").is_some();
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl");
    if fdk && musl {
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
        // An ar archive with no members is its 8-byte magic alone.
        std::fs::write(out.join("libstdc++.a"), b"!<arch>\n").unwrap();
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}
