//! Device names, routing-table ids and the ownership mark krafty puts on every device it makes.
//!
//! An attachment is one network on one interface of one container: (network, container ID,
//! interface name), as the CNI specification identifies it. Its device names derive from the
//! container ID and the interface name, so that every invocation of the chain (and a later DEL,
//! CHECK or GC) finds the same devices without shared state:
//!
//! | device    | `net1` (a pod's first network)  | any other interface name                  |
//! |-----------|---------------------------------|-------------------------------------------|
//! | VRF       | `krv` + first 12 chars of ID    | `krv` + first 5 chars + `.` + 6 hex digits |
//! | bridge    | `krb` + first 12 chars          | `krb` + first 5 chars + `.` + 6 hex digits |
//! | host veth | `veth` + first 11 chars         | `veth` + first 4 chars + `.` + 6 hex digits |
//!
//! e.g. for ID a3f2b1c4d5e6f7a8: `krva3f2b1c4d5e6` for net1, `krva3f2b.e05ba9` for net2. The
//! hex digits are FNV-1a-32 of `<container id>/<interface name>`, so two interfaces of one pod
//! differ, and so do the names of pods whose IDs share their first characters. The network is
//! not part of the names: a container cannot have one interface name twice, so a second
//! network asked onto the same interface finds the first one's devices and is refused (by
//! their marks) before it changes anything.
//!
//! Two attachments could still get one name (IDs sharing their first 12 characters, or a hash
//! collision); the ownership mark (the device alias, carrying the whole identity) turns that
//! into an error instead of a hijack.
//!
//! In pod scope the attachment's devices also share an interface group derived from its mark
//! ([`attachment_group`]), so that DEL can remove them in one request.

use std::ops::RangeInclusive;

/// The kernel's IFNAMSIZ less the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;
pub const VRF_PREFIX: &str = "krv";
pub const BRIDGE_PREFIX: &str = "krb";
pub const HOST_VETH_PREFIX: &str = "veth";
/// A multi-node network's VXLAN port on its shared bridge.
pub const VXLAN_PREFIX: &str = "krx";

/// VXLAN's network identifiers are 24 bits; 0 is not used.
pub const VNI_RANGE: RangeInclusive<u32> = 1..=0xff_ffff;
/// The UDP port of krafty's VXLAN tunnels unless a network names another. Not 8472 (flannel's
/// and Cilium's VXLAN), 4789 (IANA's VXLAN: Calico, Antrea, Kube-OVN), 4790 (VXLAN-GPE), 4791
/// (RoCEv2, which RDMA NICs take for themselves) or 6081 (Geneve: OVN-Kubernetes, Antrea,
/// Cilium), and below the kernel's ephemeral range (32768 and up), so no client socket holds
/// it by chance.
pub const DEFAULT_VXLAN_PORT: u16 = 4793;

/// Derived VRF tables fall in this range: clear of 0 (unspec), 253 (default), 254 (main),
/// 255 (local), and of the small numbers administrators tend to pick by hand.
pub const DERIVED_TABLE_RANGE: RangeInclusive<u32> = 100_000..=165_535;
/// Tables the kernel gives a meaning of its own.
pub const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

pub const MAX_CONTAINER_ID_LEN: usize = 128;
/// The kernel keeps at most 255 bytes of a device alias. The longest mark, `krafty:` +
/// network + `/` + container ID + `/` + interface name + ` hairpin`, fits with this.
pub const MAX_NETWORK_NAME_LEN: usize =
    255 - "krafty:".len() - 1 - MAX_CONTAINER_ID_LEN - 1 - MAX_IFNAME_LEN - 1 - HAIRPIN_FLAG.len();

/// The interface Multus gives a pod's first secondary network: its devices keep the names
/// of the original krafty, which knew no other.
pub const FIRST_IFNAME: &str = "net1";

/// The part of a device name after its prefix: `len` characters at most (see the module
/// documentation).
fn attachment_key(container_id: &str, ifname: &str, len: usize) -> String {
    // Container IDs are validated to be ASCII, so any byte offset is a char boundary.
    let prefix = |len: usize| &container_id[..container_id.len().min(len)];
    if ifname == FIRST_IFNAME {
        return prefix(len).to_string();
    }
    let hash = fnv1a32(format!("{container_id}/{ifname}").as_bytes()) & 0xff_ffff;
    format!("{}.{hash:06x}", prefix(len - 7))
}

pub fn vrf_name(container_id: &str, ifname: &str) -> String {
    format!("{VRF_PREFIX}{}", attachment_key(container_id, ifname, 12))
}

pub fn bridge_name(container_id: &str, ifname: &str) -> String {
    format!(
        "{BRIDGE_PREFIX}{}",
        attachment_key(container_id, ifname, 12)
    )
}

pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!(
        "{HOST_VETH_PREFIX}{}",
        attachment_key(container_id, ifname, 11)
    )
}

/// The shared VRF of a network (`scope: network`): see [`shared_name`].
pub fn shared_vrf_name(network: &str) -> String {
    shared_name(VRF_PREFIX, network)
}

/// The shared bridge of a network (`scope: network`).
pub fn shared_bridge_name(network: &str) -> String {
    shared_name(BRIDGE_PREFIX, network)
}

/// The VXLAN port of a multi-node network's shared bridge.
pub fn shared_vxlan_name(network: &str) -> String {
    shared_name(VXLAN_PREFIX, network)
}

/// The VNI of a multi-node network whose config names none: the same on every node, within
/// [`VNI_RANGE`].
pub fn derived_vni(network: &str) -> u32 {
    let span = VNI_RANGE.end() - VNI_RANGE.start() + 1;
    VNI_RANGE.start() + fnv1a32(format!("{network}#vni").as_bytes()) % span
}

/// `<prefix>` + the network name's first 6 letters and digits + `-` + 5 hex digits of its
/// FNV-1a hash: readable, 15 characters at most, and distinct for names that share their
/// first letters. The `-` keeps these apart from per-pod names, which are hex only.
fn shared_name(prefix: &str, network: &str) -> String {
    let readable: String = network
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect();
    format!(
        "{prefix}{readable}-{:05x}",
        fnv1a32(network.as_bytes()) & 0xf_ffff
    )
}

/// FNV-1a, 32 bit: small, stable across releases and platforms, and what the original used.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The MAC of a bridge whose mark is `mark`: locally administered, unicast, and the same
/// wherever and whenever the bridge is made. A bridge without a MAC of its own takes its
/// lowest port's, so the gateway's MAC would change under the pods whenever a port comes or
/// goes, and their ARP entries for the gateway would point nowhere until they expire.
pub fn bridge_mac(mark: &str) -> [u8; 6] {
    let [a, b, c, d] = fnv1a32(mark.as_bytes()).to_be_bytes();
    let [e, ..] = fnv1a32(format!("{mark}#mac").as_bytes()).to_be_bytes();
    [0x02, a, b, c, d, e]
}

/// The table a VRF named `vrf_name` gets when its config names none.
pub fn derived_table(vrf_name: &str) -> u32 {
    let span = DERIVED_TABLE_RANGE.end() - DERIVED_TABLE_RANGE.start() + 1;
    DERIVED_TABLE_RANGE.start() + fnv1a32(vrf_name.as_bytes()) % span
}

/// The first table from `preferred` on (wrapping within the derived range) that `is_used`
/// rejects, or None when the whole range is taken.
pub fn first_free_table(preferred: u32, is_used: impl Fn(u32) -> bool) -> Option<u32> {
    let start = *DERIVED_TABLE_RANGE.start();
    let span = DERIVED_TABLE_RANGE.end() - start + 1;
    (0..span)
        .map(|step| start + (preferred - start + step) % span)
        .find(|table| !is_used(*table))
}

/// The alias krafty writes on a device it created for one attachment, and checks before it
/// touches a device of that name again.
pub fn attachment_mark(network: &str, container_id: &str, ifname: &str) -> String {
    format!("krafty:{network}/{container_id}/{ifname}")
}

/// Interface groups of pod-scope attachments fall in this range: clear of 0 (the default group,
/// which the kernel refuses to delete by) and of the small numbers administrators pick by hand,
/// and below 2^31, which iproute2 takes as the largest group.
pub const ATTACHMENT_GROUP_RANGE: RangeInclusive<u32> = 0x4000_0000..=0x7fff_ffff;

/// The interface group of the devices one attachment owns (its host veth, and in pod scope its
/// VRF and bridge), from its mark: DEL removes them with one group RTM_DELLINK, one kernel
/// batch. Two attachments may share a group (a 1 in 2^30 collision), so DEL checks the group's
/// members. The group is set in the request that creates a device, whereas the mark (its
/// alias) needs a second one: an unmarked device in its attachment's group with its
/// attachment's name is one whose creator was killed in between.
pub fn attachment_group(mark: &str) -> u32 {
    ATTACHMENT_GROUP_RANGE.start() | (fnv1a32(mark.as_bytes()) & 0x3fff_ffff)
}

/// Interface groups of shared devices (`scope: network`) fall in this range, apart from the
/// attachments': a group deletion of an attachment never reaches a shared device, and an
/// unmarked device in this range is a shared device whose creator was killed before marking it.
pub const NETWORK_GROUP_RANGE: RangeInclusive<u32> = 0x2000_0000..=0x3fff_ffff;

/// The interface group of a network's shared devices: like an attachment's, it is set when the
/// device is created, in the same request, so that a device whose creator was killed before it
/// could mark it is still known for krafty's.
pub fn network_group(network: &str) -> u32 {
    NETWORK_GROUP_RANGE.start() | (fnv1a32(network_mark(network).as_bytes()) & 0x1fff_ffff)
}

/// The network a network mark names, if `alias` is one (`krafty:<network>`, flags aside).
pub fn network_of(alias: &str) -> Option<&str> {
    let network = alias.split(' ').next()?.strip_prefix("krafty:")?;
    (!network.is_empty() && !network.contains('/')).then_some(network)
}

/// The alias of a network's shared devices: they belong to the network, not to one pod.
pub fn network_mark(network: &str) -> String {
    format!("krafty:{network}")
}

/// The network, container ID and interface name of a per-attachment mark, if `alias` is one.
/// None of the three holds a `/`, so the split is unambiguous.
pub fn parse_attachment_mark(alias: &str) -> Option<(&str, &str, &str)> {
    let mut parts = alias.split(' ').next()?.strip_prefix("krafty:")?.split('/');
    let (network, container_id, ifname) = (parts.next()?, parts.next()?, parts.next()?);
    let complete = parts.next().is_none()
        && !network.is_empty()
        && !container_id.is_empty()
        && !ifname.is_empty();
    complete.then_some((network, container_id, ifname))
}

/// The container ID and interface name in a per-attachment mark of `network`, if `alias` is
/// one.
pub fn attachment_of<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let (of, container_id, ifname) = parse_attachment_mark(alias)?;
    (of == network).then_some((container_id, ifname))
}

/// A flag after the mark on a bridge: ports added to it get hairpin mode.
pub const HAIRPIN_FLAG: &str = "hairpin";

/// Whether a device alias says krafty made the device (for any attachment).
pub fn is_krafty_mark(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with("krafty:"))
}

/// The kernel's rules for interface names (dev_valid_name), plus the 15-byte limit.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name {name:?} is {} bytes, more than the kernel's limit of {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(format!("interface name {name:?} contains {bad:?}"));
    }
    Ok(())
}

/// Container IDs become part of device names, marks and file names: only the characters the
/// CNI specification allows (alphanumerics, `_`, `.`, `-`), not starting with a dot.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    validate_token("CNI_CONTAINERID", id, MAX_CONTAINER_ID_LEN)
}

/// Network names reach marks, log lines and (later) file names under krafty's state dir.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    validate_token("name", name, MAX_NETWORK_NAME_LEN)
}

fn validate_token(what: &str, value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.len() > max_len {
        return Err(format!("{what} is longer than {max_len} characters"));
    }
    if value.starts_with('.') {
        return Err(format!("{what} {value:?} starts with a dot"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{what} {value:?} contains {bad:?}; only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "a3f2b1c4d5e6f7a8b9c0d1e2f3a4b5c6";

    #[test]
    fn net1_keeps_the_original_names() {
        assert_eq!(vrf_name(ID, "net1"), "krva3f2b1c4d5e6");
        assert_eq!(bridge_name(ID, "net1"), "krba3f2b1c4d5e6");
        assert_eq!(host_veth_name(ID, "net1"), "vetha3f2b1c4d5e");
        for name in [
            vrf_name(ID, "net1"),
            bridge_name(ID, "net1"),
            host_veth_name(ID, "net1"),
        ] {
            assert_eq!(name.len(), MAX_IFNAME_LEN);
            validate_ifname(&name).unwrap();
        }
        assert_eq!(vrf_name("abc", "net1"), "krvabc");
    }

    #[test]
    fn other_interfaces_follow_the_documented_rule() {
        let hash = fnv1a32(format!("{ID}/net2").as_bytes()) & 0xff_ffff;
        assert_eq!(vrf_name(ID, "net2"), format!("krva3f2b.{hash:06x}"));
        assert_eq!(bridge_name(ID, "net2"), format!("krba3f2b.{hash:06x}"));
        assert_eq!(host_veth_name(ID, "net2"), format!("vetha3f2.{hash:06x}"));
        assert_eq!(vrf_name("ab", "eth1").len(), "krvab.".len() + 6);
        for ifname in ["net2", "eth0", "fifteen-chars-x"] {
            for name in [
                vrf_name(ID, ifname),
                bridge_name(ID, ifname),
                host_veth_name(ID, ifname),
            ] {
                assert_eq!(name.len(), MAX_IFNAME_LEN, "{name}");
                validate_ifname(&name).unwrap();
            }
        }
    }

    #[test]
    fn the_interfaces_of_one_pod_get_distinct_names() {
        let mut seen = std::collections::HashSet::new();
        let ifnames = (1..=1000)
            .map(|i| format!("net{i}"))
            .chain((0..100).map(|i| format!("eth{i}")));
        for ifname in ifnames {
            assert!(seen.insert(host_veth_name(ID, &ifname)), "{ifname}");
            assert!(seen.insert(vrf_name(ID, &ifname)), "{ifname}");
        }
    }

    #[test]
    fn the_longest_mark_fits_the_kernels_alias() {
        let mark = attachment_mark(
            &"n".repeat(MAX_NETWORK_NAME_LEN),
            &"c".repeat(MAX_CONTAINER_ID_LEN),
            &"i".repeat(MAX_IFNAME_LEN),
        );
        assert_eq!(format!("{mark} {HAIRPIN_FLAG}").len(), 255);
    }

    #[test]
    fn bridge_macs_are_local_unicast_and_stable() {
        let mac = bridge_mac("krafty:lab");
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
        assert_eq!(mac, bridge_mac("krafty:lab"));
        assert_ne!(mac, bridge_mac("krafty:lab2"));
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn derived_tables_stay_in_range_and_avoid_reserved_ones() {
        for i in 0..10_000 {
            let table = derived_table(&vrf_name(&format!("{i:016x}"), "net1"));
            assert!(DERIVED_TABLE_RANGE.contains(&table));
            assert!(!RESERVED_TABLES.contains(&table));
        }
        assert_eq!(
            derived_table("krva3f2b1c4d5e6"),
            derived_table("krva3f2b1c4d5e6")
        );
    }

    #[test]
    fn probing_takes_the_next_free_table_and_wraps() {
        let end = *DERIVED_TABLE_RANGE.end();
        let start = *DERIVED_TABLE_RANGE.start();
        assert_eq!(first_free_table(start + 5, |_| false), Some(start + 5));
        assert_eq!(
            first_free_table(start + 5, |t| t == start + 5 || t == start + 6),
            Some(start + 7)
        );
        assert_eq!(first_free_table(end, |t| t == end), Some(start));
        assert_eq!(first_free_table(start, |_| true), None);
    }

    #[test]
    fn ifname_rules() {
        for good in ["net1", "eth0", "a", "x-y_z.1", "fifteen-chars-x"] {
            validate_ifname(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "sixteen-chars-xx",
            "a/b",
            "a:b",
            "a b",
            "tab\t",
            "ünï",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn container_id_and_network_name_rules() {
        validate_container_id(ID).unwrap();
        validate_container_id("pod_1.a-b").unwrap();
        for bad in ["", "../x", ".hidden", "a/b", "a;b", "a b", &"x".repeat(129)] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
        validate_network_name("krafty").unwrap();
        assert!(validate_network_name("krafty/../../x").is_err());
    }

    #[test]
    fn shared_names_are_readable_bounded_and_distinct() {
        let name = shared_bridge_name("krafty");
        assert!(name.starts_with("krbkrafty-"), "{name}");
        assert_eq!(name.len(), MAX_IFNAME_LEN);
        assert!(shared_vrf_name("krafty").starts_with("krvkrafty-"));
        assert_ne!(
            shared_bridge_name("lab-net-a"),
            shared_bridge_name("lab-net-b")
        );
        for network in ["a", "x.y_z-1", &"long".repeat(25)] {
            let name = shared_vrf_name(network);
            validate_ifname(&name).unwrap();
            assert!(
                name.contains('-'),
                "never mistaken for a per-pod name: {name}"
            );
        }
    }

    #[test]
    fn vxlan_names_and_vnis_are_per_network_and_stable() {
        let name = shared_vxlan_name("krafty");
        assert!(name.starts_with("krxkrafty-"), "{name}");
        assert_eq!(name.len(), MAX_IFNAME_LEN);
        assert_eq!(&name[3..], &shared_bridge_name("krafty")[3..]);
        assert_eq!(derived_vni("lab"), derived_vni("lab"));
        assert_ne!(derived_vni("lab"), derived_vni("lab2"));
        for i in 0..10_000 {
            assert!(VNI_RANGE.contains(&derived_vni(&format!("net-{i}"))));
        }
    }

    #[test]
    fn attachment_groups_stay_in_range_and_differ_per_attachment() {
        for i in 0..10_000 {
            let group = attachment_group(&attachment_mark("net", &format!("{i:064x}"), "net1"));
            assert!(ATTACHMENT_GROUP_RANGE.contains(&group), "{group}");
        }
        let mark = attachment_mark("net", ID, "net1");
        assert_eq!(attachment_group(&mark), attachment_group(&mark));
        assert_ne!(
            attachment_group(&mark),
            attachment_group(&attachment_mark("other", ID, "net1"))
        );
        assert_ne!(
            attachment_group(&mark),
            attachment_group(&attachment_mark("net", ID, "net2"))
        );
    }

    #[test]
    fn network_groups_stay_apart_from_attachment_groups() {
        for i in 0..10_000 {
            let group = network_group(&format!("net-{i}"));
            assert!(NETWORK_GROUP_RANGE.contains(&group), "{group}");
            assert!(!ATTACHMENT_GROUP_RANGE.contains(&group));
        }
        assert_eq!(network_of("krafty:lab"), Some("lab"));
        assert_eq!(network_of("krafty:lab hairpin"), Some("lab"));
        assert_eq!(network_of("krafty:lab/abc/net1"), None);
        assert_eq!(network_of("krafty:"), None);
        assert_eq!(network_of("uplink"), None);
    }

    #[test]
    fn attachment_marks_name_their_container_and_interface() {
        let mark = attachment_mark("net", "abc", "net2");
        assert_eq!(attachment_of(&mark, "net"), Some(("abc", "net2")));
        assert_eq!(
            attachment_of(&format!("{mark} hairpin"), "net"),
            Some(("abc", "net2"))
        );
        assert_eq!(attachment_of(&mark, "ne"), None);
        assert_eq!(attachment_of(&network_mark("net"), "net"), None);
        assert_eq!(attachment_of("krafty:net/abc", "net"), None);
        assert_eq!(attachment_of("krafty:net/abc/", "net"), None);
        assert_eq!(attachment_of("krafty:net//net1", "net"), None);
        assert_eq!(attachment_of("krafty:net/a/b/c", "net"), None);
        assert_eq!(attachment_of("uplink", "net"), None);
    }

    #[test]
    fn marks_carry_network_full_id_and_interface() {
        let mark = attachment_mark("krafty", ID, "net1");
        assert_eq!(mark, format!("krafty:krafty/{ID}/net1"));
        assert!(is_krafty_mark(Some(&mark)));
        assert!(!is_krafty_mark(Some("uplink")));
        assert!(!is_krafty_mark(None));
    }
}
