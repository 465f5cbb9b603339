//! What the plugins of one chain share about node devices: finding what earlier plugins
//! built, placing devices by scope, creating or reusing them, and collecting garbage.

use crate::attachment::Attachment;
use crate::config::Scope;
use crate::error::Error;
use crate::lock::NodeLock;
use crate::naming;
use crate::netlink::{InfoKind, Link, Netlink};
use crate::result::{CniResult, Interface};
use crate::skel::Request;

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

/// CHECK's `prevResult`, which it checks the devices against.
pub fn prev_result_to_check<C>(request: &Request<C>) -> Result<&CniResult, Error> {
    request
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::CheckFailed("CHECK needs a prevResult".into()))
}

/// How a result reports a node device (a VRF or bridge): its name and MAC, no `sandbox`.
pub fn node_interface(link: &Link) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.clone(),
        ..Interface::default()
    }
}

/// Refuses an ADD onto an interface the container already has on another network (or, by a
/// name collision, another container has): the chain's first plugin finds that attachment's
/// host veth, before anything of this one exists.
pub async fn refuse_taken_interface(
    netlink: &Netlink,
    attachment: &Attachment,
) -> Result<(), Error> {
    match netlink.link(&attachment.host_veth_name()).await? {
        Some(link) => link.ensure_marked(&attachment.mark()),
        None => Ok(()),
    }
}

/// Refuses a chain whose VRF (from `prevResult`) and bridge do not have the same scope: a
/// pod's VRF would take the network's shared bridge from the pods before (every ADD moving it
/// into the newest VRF), and a network's VRF would hold every pod's bridge with the same
/// gateway. Only the device's mark says which it is.
pub fn refuse_mixed_scopes(vrf: Option<&Link>, bridge_scope: Scope) -> Result<(), Error> {
    let Some(vrf) = vrf else { return Ok(()) };
    let vrf_scope = match vrf.owner_mark().and_then(naming::network_of) {
        Some(_) => Scope::Network,
        None => Scope::Pod,
    };
    if vrf_scope == bridge_scope {
        return Ok(());
    }
    Err(Error::invalid_config(format!(
        "krafty-bridge has scope {:?} but the VRF {} that krafty-vrf made before it in the chain \
         has scope {:?}: give krafty-vrf and krafty-bridge the same scope",
        bridge_scope.as_str(),
        vrf.name,
        vrf_scope.as_str()
    )))
}

/// Refuses krafty-vrf after krafty-bridge in a chain: the bridge would stay out of the VRF.
pub fn refuse_vrf_after_bridge(prev_result: Option<&CniResult>) -> Result<(), Error> {
    let bridge = prev_result.and_then(|result| {
        result
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_empty() && i.name.starts_with(naming::BRIDGE_PREFIX))
    });
    match bridge {
        Some(bridge) => Err(Error::invalid_config(format!(
            "krafty-vrf comes after krafty-bridge (prevResult lists the bridge {}): put krafty-vrf \
             first in the chain, so that the bridge is made inside the VRF",
            bridge.name
        ))),
        None => Ok(()),
    }
}

/// A VRF or bridge of the chain, or a multi-node network's VXLAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDeviceKind {
    Vrf,
    Bridge,
    Vxlan,
}

impl NodeDeviceKind {
    pub fn info_kind(self) -> InfoKind {
        match self {
            NodeDeviceKind::Vrf => InfoKind::Vrf,
            NodeDeviceKind::Bridge => InfoKind::Bridge,
            NodeDeviceKind::Vxlan => InfoKind::Vxlan,
        }
    }
}

/// Where a VRF or bridge goes: its name and the mark that says who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    pub mark: String,
    /// Shared by every pod of the network (`scope: network`): DEL leaves it, GC removes it.
    pub shared: bool,
}

impl Placement {
    /// Where `kind` goes for `attachment` of a chain whose devices have `scope`.
    pub fn of(kind: NodeDeviceKind, scope: Scope, attachment: &Attachment) -> Placement {
        match (scope, kind) {
            (Scope::Pod, NodeDeviceKind::Vrf) => Placement {
                name: attachment.vrf_name(),
                mark: attachment.mark(),
                shared: false,
            },
            (Scope::Pod, NodeDeviceKind::Bridge) => Placement {
                name: attachment.bridge_name(),
                mark: attachment.mark(),
                shared: false,
            },
            // A VXLAN port is always its network's.
            (Scope::Network, kind) | (Scope::Pod, kind @ NodeDeviceKind::Vxlan) => {
                Placement::of_network(kind, attachment.network())
            }
        }
    }

    /// Where a network's shared VRF or bridge goes.
    pub fn of_network(kind: NodeDeviceKind, network: &str) -> Placement {
        let name = match kind {
            NodeDeviceKind::Vrf => naming::shared_vrf_name(network),
            NodeDeviceKind::Bridge => naming::shared_bridge_name(network),
            NodeDeviceKind::Vxlan => naming::shared_vxlan_name(network),
        };
        Placement {
            name,
            mark: naming::network_mark(network),
            shared: true,
        }
    }

    /// The interface group the device is created in: its attachment's, or its network's for a
    /// shared device; set at creation, it tells krafty's device from a stranger's even before
    /// the device is marked (see [`naming::attachment_group`]).
    pub fn group(&self) -> u32 {
        match naming::network_of(&self.mark) {
            Some(network) => naming::network_group(network),
            None => naming::attachment_group(&self.mark),
        }
    }

    /// Whether `link` is the device this placement names: marked as ours, or unmarked in our
    /// group.
    pub fn owns(&self, link: &Link) -> bool {
        link.is_marked(&self.mark) || link.is_unmarked_in_group(self.group())
    }

    /// Holds the network's lock for shared devices, which concurrent invocations create and
    /// use together; a pod's own devices need none.
    pub fn lock<C>(&self, request: &Request<C>) -> Result<Option<NodeLock>, Error> {
        if self.shared {
            NodeLock::network(&request.run_dir, &request.network).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The device if it exists, checked to be ours and of `kind`. One left unmarked by an
    /// invocation killed right after creating it is marked with `finish_with` when given (ADD;
    /// CHECK changes nothing and finds it wanting).
    pub async fn existing(
        &self,
        netlink: &Netlink,
        kind: NodeDeviceKind,
        finish_with: Option<&str>,
    ) -> Result<Option<Link>, Error> {
        let Some(mut link) = netlink.link(&self.name).await? else {
            return Ok(None);
        };
        if let Some(alias) = finish_with.filter(|_| link.is_unmarked_in_group(self.group())) {
            netlink.mark(&link, alias).await?;
            link.alias = Some(alias.to_string());
        }
        link.ensure_marked(&self.mark)?;
        if !link.is_kind(&kind.info_kind()) {
            return Err(Error::DeviceConflict {
                name: link.name,
                reason: format!("is not a {}", kind.info_kind()),
            });
        }
        Ok(Some(link))
    }

    /// DEL: removes a device of one attachment; a shared one outlives the attachment, and a
    /// device that is gone or not ours is left as it is.
    pub async fn remove_with_attachment(&self, netlink: &Netlink) -> Result<(), Error> {
        if self.shared {
            return Ok(());
        }
        match netlink.link(&self.name).await? {
            Some(link) if self.owns(&link) => netlink.delete(&link).await,
            Some(_) => {
                tracing::warn!(
                    "{} exists but is not this attachment's; leaving it",
                    self.name
                );
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// DEL of krafty-vrf and krafty-bridge: removes the attachment's own VRF or bridge (a shared
/// one outlives the attachment), then its record if the record holds nothing to give back (an
/// ADD that never reached krafty-veth, whose DEL removes every other record).
pub async fn remove_node_device<C>(
    kind: NodeDeviceKind,
    scope: Scope,
    request: &Request<C>,
) -> Result<(), Error> {
    let attachment = request.attachment()?;
    Placement::of(kind, scope, attachment)
        .remove_with_attachment(&Netlink::connect()?)
        .await?;
    request.records().remove_if_begun(attachment)
}

/// GC of VRFs or bridges: removes this network's devices of attachments that are not valid
/// any more, and its shared devices once no attachment of the network is valid. Devices of
/// other networks and devices without krafty's mark are never touched. Keeps going past
/// errors and reports them all.
pub async fn collect_node_devices<C>(
    netlink: &Netlink,
    request: &Request<C>,
    kind: NodeDeviceKind,
) -> Result<(), Error> {
    let _lock = NodeLock::network(&request.run_dir, &request.network)?;
    // Lock files of invocations killed while holding them (this one's is held, and kept).
    NodeLock::clear_stale(&request.run_dir);
    let mut errors = Vec::new();
    let shared = Placement::of_network(kind, &request.network);
    for link in netlink.links_of_kind(kind.info_kind()).await? {
        let attachment = link
            .alias
            .as_deref()
            .and_then(|alias| Attachment::from_mark(alias, &request.network));
        let orphaned = match attachment {
            Some(attachment) => !request.is_valid(&attachment),
            None => {
                link.name == shared.name
                    && shared.owns(&link)
                    && request.valid_attachments.is_empty()
            }
        };
        if orphaned {
            tracing::info!("GC removes {}", link.name);
            if let Err(error) = netlink.delete(&link).await {
                errors.push(error);
            }
        }
    }
    Error::from_all(errors)
}
