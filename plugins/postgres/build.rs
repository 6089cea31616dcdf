//! Lets the tests and the benchmark link this crate together with the `autosql` plugin.
//!
//! Each plugin library exports the same root-module symbol (what the host looks up in a
//! `cdylib`), so a program linking two plugin rlibs sees it twice. Those programs call the
//! plugins directly and never look the symbol up, so for them alone the linker may keep
//! either copy. The `cdylib` itself is linked without this flag.

fn main() {
    for target in ["tests", "examples"] {
        println!("cargo::rustc-link-arg-{target}=-Wl,--allow-multiple-definition");
    }
}
