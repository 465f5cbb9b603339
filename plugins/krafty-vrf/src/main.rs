//! krafty-vrf: a Linux VRF on the node for one attachment, first link of the krafty chain.
//!
//! ADD creates (idempotently) the VRF `krv<id>` with a routing table of its own and reports it
//! as a node interface; DEL removes it; CHECK verifies it. The table is `vrfTable` when the
//! config names one, else derived from the VRF's name (see `krafty_cni::naming`).

use krafty_cni::config::VrfConfig;
use krafty_cni::netlink::{InfoKind, Link, Netlink};
use krafty_cni::result::Interface;
use krafty_cni::{naming, CniResult, Error, Plugin, Request};

struct Vrf;

impl Plugin for Vrf {
    const NAME: &'static str = "krafty-vrf";
    type Config = VrfConfig;

    async fn add(&self, request: &Request<VrfConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        let name = naming::vrf_name(&request.env.container_id);
        let mark = request.attachment_mark();
        let netlink = Netlink::connect()?;

        let vrf = match netlink.link(&name).await? {
            Some(existing) => reuse(existing, &mark, config.table)?,
            None => create(&netlink, &name, &mark, config.table).await?,
        };
        let mut result = request.result_to_extend();
        result.push_interface(Interface {
            name,
            mac: vrf.mac,
            ..Interface::default()
        });
        Ok(result)
    }

    async fn del(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let name = naming::vrf_name(&request.env.container_id);
        let netlink = Netlink::connect()?;
        match netlink.link(&name).await? {
            Some(vrf) if vrf.is_marked(&request.attachment_mark()) => netlink.delete(&vrf).await,
            Some(_) => {
                tracing::warn!("{name} exists but is not this attachment's VRF; leaving it");
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn check(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        let name = naming::vrf_name(&request.env.container_id);
        let reported = request
            .prev_result
            .as_ref()
            .is_some_and(|r| r.interface_index(&name, "").is_some());
        if !reported {
            return Err(Error::CheckFailed(format!(
                "prevResult does not list the VRF {name}"
            )));
        }
        let vrf = Netlink::connect()?
            .link(&name)
            .await?
            .ok_or_else(|| Error::CheckFailed(format!("VRF {name} does not exist")))?;
        vrf.ensure_marked(&request.attachment_mark())?;
        if !vrf.is_kind(&InfoKind::Vrf) {
            return Err(Error::CheckFailed(format!("{name} is not a VRF")));
        }
        if !vrf.up {
            return Err(Error::CheckFailed(format!("VRF {name} is down")));
        }
        if let Some(table) = config.table {
            if vrf.vrf_table != Some(table) {
                return Err(Error::CheckFailed(format!(
                    "VRF {name} uses table {:?}, the config says {table}",
                    vrf.vrf_table
                )));
            }
        }
        Ok(())
    }
}

/// An ADD repeated for the same attachment finds its VRF already there.
fn reuse(existing: Link, mark: &str, table: Option<u32>) -> Result<Link, Error> {
    existing.ensure_marked(mark)?;
    if !existing.is_kind(&InfoKind::Vrf) {
        return Err(Error::DeviceConflict {
            name: existing.name,
            reason: "is not a VRF".into(),
        });
    }
    if let Some(table) = table {
        if existing.vrf_table != Some(table) {
            return Err(Error::invalid_config(format!(
                "VRF {} already exists with table {:?}, not vrfTable {table}",
                existing.name, existing.vrf_table
            )));
        }
    }
    Ok(existing)
}

async fn create(
    netlink: &Netlink,
    name: &str,
    mark: &str,
    explicit: Option<u32>,
) -> Result<Link, Error> {
    let vrfs = netlink.links_of_kind(InfoKind::Vrf).await?;
    let table = match explicit {
        Some(table) => {
            if let Some(owner) = vrfs.iter().find(|v| v.vrf_table == Some(table)) {
                return Err(Error::invalid_config(format!(
                    "vrfTable {table} is already used by VRF {}",
                    owner.name
                )));
            }
            table
        }
        None => naming::first_free_table(naming::derived_table(name), |table| {
            vrfs.iter().any(|v| v.vrf_table == Some(table))
        })
        .ok_or_else(|| {
            Error::TryAgainLater("every table of krafty's derived range is in use".into())
        })?,
    };
    let created = netlink
        .create_vrf(name, table, mark)
        .await
        .map_err(explain_missing_vrf)?;
    let vrf = netlink.link(name).await?.ok_or_else(|| {
        Error::TryAgainLater(format!("VRF {name} vanished right after it was created"))
    })?;
    if created {
        Ok(vrf)
    } else {
        // Another invocation for this attachment created it between the lookup and now.
        reuse(vrf, mark, explicit)
    }
}

/// A kernel without VRF support answers "operation not supported": say what that means.
fn explain_missing_vrf(error: Error) -> Error {
    match error {
        Error::Netlink {
            errno: Some(libc::EOPNOTSUPP),
            ..
        } => Error::NotAvailable(
            "this kernel cannot create VRF devices (CONFIG_NET_VRF is off or the vrf module is missing)".into(),
        ),
        other => other,
    }
}

fn main() {
    krafty_cni::skel::main(Vrf)
}
