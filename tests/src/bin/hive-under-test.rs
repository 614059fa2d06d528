//! The `hive` program built inside the test package, so that cargo builds it for the integration tests
//! and they can spawn real agents of it (a binary of another package is not built for them).

fn main() -> anyhow::Result<()> {
    hive::cli::main()
}
