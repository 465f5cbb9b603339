//! `krafty-installer`: see the library crate and `--help`.

use clap::Parser;
use krafty_installer::Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(krafty_installer::run(args))?;
    Ok(())
}
