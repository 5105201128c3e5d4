//! For static musl builds with the FDK AAC encoder (feature `aac-encoder`): fdk-aac-sys's build
//! script asks for `-lstdc++` whenever the build host is Linux, and there is no libstdc++ for musl
//! (Debian has none; rust-lld stops with "unable to find library -lstdc++"). FDK is compiled with
//! `-fno-exceptions -fno-rtti` (the CFLAGS_<target> that cross/musl-env.sh sets) and then calls
//! nothing from the C++ runtime, only libc (malloc/calloc/free, mem*, str*, stdio), so an empty
//! archive satisfies the link. This writes one into OUT_DIR and puts it on the library search path,
//! for musl targets only; glibc targets link the toolchain's libstdc++ as usual (taking nothing
//! from it). Measured in bench/aac/REPORT.md ("Static cross-builds").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let encoder = std::env::var_os("CARGO_FEATURE_AAC_ENCODER").is_some();
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl");
    if encoder && musl {
        let Some(out) = std::env::var_os("OUT_DIR") else {
            panic!("cargo sets OUT_DIR for build scripts");
        };
        let out = std::path::PathBuf::from(out);
        // An ar archive with no members is its 8-byte magic alone.
        if let Err(e) = std::fs::write(out.join("libstdc++.a"), b"!<arch>\n") {
            panic!(
                "cannot write the empty libstdc++.a into {}: {e}",
                out.display()
            );
        }
        println!("cargo:rustc-link-search=native={}", out.display());
    }
}
