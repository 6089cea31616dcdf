//! Rebuilds `golconde` when anything under `plugin-api/` changes, files added included:
//! `golconde new-plugin` embeds that folder with `include_dir!`, which by itself notices
//! only changes to the files it has already seen.

fn main() {
    println!("cargo:rerun-if-changed=../plugin-api");
}
