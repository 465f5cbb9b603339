//! The VRF step: what krafty-vrf does, and the `krafty` plugin first. Each verb takes its
//! inputs explicitly (the checked config, the node's netlink), so that a chain of plugins and
//! one plugin doing the whole chain run the same code.
//!
//! ADD creates (idempotently) the VRF with a routing table of its own: `krv<id>` for one
//! attachment (`scope: pod`), or one per network shared by its pods (`scope: network`). The
//! table is `vrfTable` when the config names one, else derived from the VRF's name (see
//! [`crate::naming`]). DEL and GC are [`chain::remove_node_device`] and
//! [`chain::collect_node_devices`] with [`NodeDeviceKind::Vrf`].

use crate::chain::{NodeDeviceKind, Placement};
use crate::config::ValidVrfConfig;
use crate::error::Error;
use crate::lock::NodeLock;
use crate::naming;
use crate::netlink::{InfoKind, Link, Netlink};
use crate::skel::Request;

/// ADD: the attachment's VRF (or its network's), made or found; the caller has refused an
/// interface the container already has (see [`crate::chain::refuse_taken_interface`]).
pub async fn add<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidVrfConfig,
) -> Result<Link, Error> {
    let place = Placement::of(NodeDeviceKind::Vrf, config.scope, request.attachment()?);
    let _lock = place.lock(request)?;
    let found = place
        .existing(netlink, NodeDeviceKind::Vrf, Some(&place.mark))
        .await?
        .map(|existing| keep_table(existing, config.table))
        .transpose()?;
    // Recorded before the first device is made (in `create`); and for a shared VRF before
    // the lock is released, because the node agent removes a shared device only when no
    // record of its network is left, under this lock.
    match found {
        Some(existing) => {
            if place.shared {
                request.begin()?;
            }
            Ok(existing)
        }
        None => create(netlink, &place, config.table, request).await,
    }
}

/// CHECK: the VRF that `prevResult` lists exists, is up and uses the configured table.
pub async fn check<C>(
    netlink: &Netlink,
    request: &Request<C>,
    config: &ValidVrfConfig,
) -> Result<Link, Error> {
    let place = Placement::of(NodeDeviceKind::Vrf, config.scope, request.attachment()?);
    let name = &place.name;
    let reported = request
        .prev_result
        .as_ref()
        .is_some_and(|r| r.interface_index(name, "").is_some());
    if !reported {
        return Err(Error::CheckFailed(format!(
            "prevResult does not list the VRF {name}"
        )));
    }
    let vrf = place
        .existing(netlink, NodeDeviceKind::Vrf, None)
        .await?
        .ok_or_else(|| Error::CheckFailed(format!("VRF {name} does not exist")))?;
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
    Ok(vrf)
}

/// STATUS: whether this kernel can make VRFs (asked without making one).
pub async fn status(netlink: &Netlink) -> Result<(), Error> {
    if netlink.supports_vrf().await? {
        Ok(())
    } else {
        Err(no_vrf_support())
    }
}

fn no_vrf_support() -> Error {
    Error::NotAvailable(
        "this kernel cannot create VRF devices (CONFIG_NET_VRF is off or the vrf module is missing)"
            .into(),
    )
}

/// An existing VRF (a repeated ADD, or the network's shared one) keeps its table; a config
/// that names another one is wrong.
fn keep_table(existing: Link, table: Option<u32>) -> Result<Link, Error> {
    match table {
        Some(table) if existing.vrf_table != Some(table) => Err(Error::invalid_config(format!(
            "VRF {} already exists with table {:?}, not vrfTable {table}",
            existing.name, existing.vrf_table
        ))),
        _ => Ok(existing),
    }
}

async fn create<C>(
    netlink: &Netlink,
    place: &Placement,
    explicit: Option<u32>,
    request: &Request<C>,
) -> Result<Link, Error> {
    // Choosing a free table and taking it must not interleave with another ADD doing the same.
    let _tables = NodeLock::vrf_tables(&request.run_dir)?;
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
        None => naming::first_free_table(naming::derived_table(&place.name), |table| {
            vrfs.iter().any(|v| v.vrf_table == Some(table))
        })
        .ok_or_else(|| {
            Error::TryAgainLater("every table of krafty's derived range is in use".into())
        })?,
    };
    // A kernel without VRF refuses the ADD before its record is begun: nothing is left.
    status(netlink).await?;
    request.begin()?;
    let created = match netlink
        .create_vrf(&place.name, table, &place.mark, place.group())
        .await
    {
        Err(Error::Netlink {
            errno: Some(libc::EOPNOTSUPP),
            ..
        }) => return Err(no_vrf_support()),
        other => other?,
    };
    if !created {
        // A VRF of this name appeared since the lookup: only ours may be adopted.
        return place
            .existing(netlink, NodeDeviceKind::Vrf, Some(&place.mark))
            .await?
            .ok_or_else(|| Error::TryAgainLater(format!("VRF {} came and went", place.name)))
            .and_then(|vrf| keep_table(vrf, explicit));
    }
    netlink.link(&place.name).await?.ok_or_else(|| {
        Error::TryAgainLater(format!(
            "VRF {} vanished right after it was created",
            place.name
        ))
    })
}
