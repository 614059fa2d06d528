//! The `hive` binary; everything is in [`hive::cli`].

fn main() -> anyhow::Result<()> {
    hive::cli::main()
}
