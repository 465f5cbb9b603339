//! `krafty-installer`: see the library crate and `--help`.

use std::io::Write;

use clap::Parser;
use krafty_installer::cli::Tool;
use krafty_installer::{inspect, Args};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(args.log_level)
        .with_target(false)
        .init();
    match &args.tool {
        Some(tool) => run_tool(tool, &args),
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(krafty_installer::run(args))?;
            Ok(())
        }
    }
}

fn run_tool(tool: &Tool, args: &Args) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match tool {
        Tool::Attachment {
            network,
            container_id,
            ifname,
            scope,
        } => {
            let attachment = krafty_cni::Attachment::new(network, container_id, ifname)?;
            serde_json::to_writer_pretty(&mut stdout, &inspect::names(&attachment, *scope))?;
            writeln!(stdout)?;
        }
        Tool::Attachments { json } => {
            let listed =
                on_this_node(async |netlink| inspect::list(netlink, &args.state_dir).await)?;
            if *json {
                serde_json::to_writer_pretty(&mut stdout, &listed)?;
                writeln!(stdout)?;
            } else {
                inspect::write_table(&mut stdout, &listed)?;
            }
        }
        Tool::Peers { json } => {
            let peers =
                on_this_node(async |netlink| inspect::peers(netlink, &args.state_dir).await)?;
            if *json {
                serde_json::to_writer_pretty(&mut stdout, &peers)?;
                writeln!(stdout)?;
            } else {
                inspect::write_peers(&mut stdout, &peers)?;
            }
        }
    }
    Ok(())
}

/// Runs a node-side inspection with a netlink connection, on a runtime of its own (the
/// connection needs one; nothing else runs in these commands).
fn on_this_node<T>(
    work: impl AsyncFnOnce(&krafty_cni::netlink::Netlink) -> Result<T, krafty_cni::Error>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    Ok(runtime.block_on(async {
        let netlink = krafty_cni::netlink::Netlink::connect()?;
        work(&netlink).await
    })?)
}
