//! krafty-vrf: a Linux VRF on the node, first link of the krafty chain.
//!
//! ADD creates (idempotently) the VRF with a routing table of its own and reports it as a node
//! interface: `krv<id>` for one attachment (`scope: pod`), or one per network shared by its
//! pods (`scope: network`). DEL removes a pod's VRF; GC removes VRFs nothing uses any more;
//! CHECK verifies it; STATUS tells whether this kernel can make VRFs at all. The table is
//! `vrfTable` when the config names one, else derived from the VRF's name (see
//! `krafty_cni::naming`).

use krafty_cni::chain::{self, NodeDeviceKind, Placement};
use krafty_cni::config::VrfConfig;
use krafty_cni::lock::NodeLock;
use krafty_cni::netlink::{InfoKind, Link, Netlink};
use krafty_cni::result::Interface;
use krafty_cni::{naming, CniResult, Error, Plugin, Request};

struct Vrf;

impl Plugin for Vrf {
    const NAME: &'static str = "krafty-vrf";
    type Config = VrfConfig;

    async fn add(&self, request: &Request<VrfConfig>) -> Result<CniResult, Error> {
        let config = request.config.validate()?;
        chain::refuse_vrf_after_bridge(request.prev_result.as_ref())?;
        let attachment = request.attachment()?;
        let place = Placement::of(NodeDeviceKind::Vrf, config.scope, attachment);
        let netlink = Netlink::connect()?;
        chain::refuse_taken_interface(&netlink, attachment).await?;

        let _lock = place.lock(request)?;
        let found = place
            .existing(&netlink, NodeDeviceKind::Vrf, Some(&place.mark))
            .await?
            .map(|existing| keep_table(existing, config.table))
            .transpose()?;
        // Recorded before the first device is made (in `create`); and for a shared VRF before
        // the lock is released, because the node agent removes a shared device only when no
        // record of its network is left, under this lock.
        let vrf = match found {
            Some(existing) => {
                if place.shared {
                    request.begin()?;
                }
                existing
            }
            None => create(&netlink, &place, config.table, request).await?,
        };
        let mut result = request.result_to_extend();
        result.push_interface(Interface {
            name: place.name,
            mac: vrf.mac,
            ..Interface::default()
        });
        Ok(result)
    }

    async fn del(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
        chain::remove_node_device(NodeDeviceKind::Vrf, config.scope, request).await
    }

    async fn check(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        let config = request.config.validate()?;
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
            .existing(&Netlink::connect()?, NodeDeviceKind::Vrf, None)
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
        Ok(())
    }

    async fn status(&self, _: &Request<VrfConfig>) -> Result<(), Error> {
        if Netlink::connect()?.supports_vrf().await? {
            Ok(())
        } else {
            Err(no_vrf_support())
        }
    }

    async fn gc(&self, request: &Request<VrfConfig>) -> Result<(), Error> {
        chain::collect_node_devices(&Netlink::connect()?, request, NodeDeviceKind::Vrf).await
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

async fn create(
    netlink: &Netlink,
    place: &Placement,
    explicit: Option<u32>,
    request: &Request<VrfConfig>,
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

fn main() {
    krafty_cni::skel::main(Vrf)
}
