//! `cargo bench -p turbo-bench`: the bulk-download comparison on release binaries.
//! Build them first: `cargo build --release --bins`.

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    let rows = turbo_bench::curl::run(&root, 100, 5, 2)?;
    println!("{}", turbo_bench::curl::table(&rows));
    let rows = turbo_bench::auth::run(&root, 500, 2)?;
    println!("{}", turbo_bench::auth::table(&rows));
    Ok(())
}
