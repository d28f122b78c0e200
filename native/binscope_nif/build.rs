//! Links the NIF with `-z nodelete`: once loaded, the library stays mapped when the VM unloads it
//! (a purge of `Binscope.Native`), and loading it again finds the same copy, statics and all.
//!
//! Without it every purge + load mapped a fresh copy: a fresh jemalloc whose mappings the old one
//! never gave back (6-12 MB of address space per reload) and a fresh pthread key (jemalloc's
//! thread-specific data), until `pthread_key_create` ran out of keys (1024 per process) and the
//! VM aborted at the 1012th reload. The load path (lib.rs) makes reuse of the same copy sound.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
