//! Finding what earlier plugins of the chain built, from `prevResult` and the kernel.

use crate::error::Error;
use crate::naming;
use crate::netlink::{InfoKind, Link, Netlink};
use crate::result::CniResult;

/// The node device (no `sandbox`) an earlier krafty plugin reported under a name starting with
/// `prefix`, checked against the kernel: it must exist, be of `kind` and carry a krafty mark.
/// `None` when the chain reported no such device.
pub async fn find_node_device(
    netlink: &Netlink,
    prev_result: Option<&CniResult>,
    prefix: &str,
    kind: InfoKind,
) -> Result<Option<Link>, Error> {
    let Some(reported) = prev_result.and_then(|result| {
        result
            .interfaces
            .iter()
            .rev()
            .find(|i| i.sandbox.is_empty() && i.name.starts_with(prefix))
    }) else {
        return Ok(None);
    };
    let link = netlink.link(&reported.name).await?.ok_or_else(|| {
        Error::invalid_config(format!(
            "prevResult lists {} but no such device exists on the node",
            reported.name
        ))
    })?;
    if !link.is_kind(&kind) || !naming::is_krafty_mark(link.owner_mark()) {
        return Err(Error::DeviceConflict {
            name: link.name,
            reason: format!("is not a krafty {kind}"),
        });
    }
    Ok(Some(link))
}
