//! The invocation environment: CNI_ARGS, the CNI_* variables and the name validators.
//!
//! Input: the whole text (UTF-8, lossy) is parsed as CNI_ARGS; its lines `NAME=VALUE` (raw
//! bytes, so values may be invalid UTF-8) are the variables `Environment::read` sees; every
//! line, and the whole text, goes through the name validators.
#![no_main]

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use krafty_cni::env::{CniArgs, Command, Environment};
use krafty_cni::naming;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_cni_args(&text);

    let mut vars: HashMap<String, OsString> = HashMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            vars.insert(name, OsString::from_vec(line[eq + 1..].to_vec()));
        }
    }
    check_environment(&vars);

    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines {
        check_names(line);
        if let Some((_, value)) = line.split_once('=') {
            check_names(value);
        }
    }
    check_names(&text);
    check_marks(&lines);
});

fn check_cni_args(text: &str) {
    match CniArgs::parse(text) {
        Ok(args) => {
            // Delegated plugins (IPAM) get the pairs back as CNI_ARGS: nothing may change.
            let printed = args.to_cni_args();
            let again = CniArgs::parse(&printed)
                .unwrap_or_else(|e| panic!("to_cni_args {printed:?} does not parse again: {e}"));
            assert_eq!(again, args, "CNI_ARGS {text:?} -> {printed:?}");
            let last = |key: &str| {
                args.pairs
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map_or("", |(_, v)| v.as_str())
            };
            assert_eq!(args.pod.namespace, last("K8S_POD_NAMESPACE"));
            assert_eq!(args.pod.name, last("K8S_POD_NAME"));
            assert_eq!(args.pod.uid, last("K8S_POD_UID"));
            for (key, value) in &args.pairs {
                assert!(!key.contains(';') && !key.contains('='), "{key:?}");
                assert!(!value.contains(';'), "{value:?}");
            }
        }
        Err(e) => assert_eq!(e.code(), 4, "{e}"),
    }
}

fn check_environment(vars: &HashMap<String, OsString>) {
    match Environment::read(|name| vars.get(name).cloned()) {
        Ok(env) => {
            let command = vars["CNI_COMMAND"].to_str().expect("accepted verbs are UTF-8");
            assert_eq!(Some(env.command), Command::parse(command));
            if matches!(env.command, Command::Add | Command::Del | Command::Check) {
                naming::validate_container_id(&env.container_id)
                    .expect("the accepted CNI_CONTAINERID is valid");
                naming::validate_ifname(&env.ifname).expect("the accepted CNI_IFNAME is valid");
            }
            if matches!(env.command, Command::Add | Command::Check) {
                assert!(env.netns.is_some(), "{:?} without CNI_NETNS", env.command);
            }
            if let Some(netns) = &env.netns {
                assert!(netns.is_absolute(), "{netns:?}");
            }
            assert!(env.cni_path.iter().all(|p| !p.as_os_str().is_empty()));
        }
        Err(e) => assert_eq!(e.code(), 4, "{e}"),
    }
}

/// What the validators accept must be safe as a device name, alias and file name.
fn check_names(s: &str) {
    if naming::validate_ifname(s).is_ok() {
        assert!(!s.is_empty() && s.len() <= naming::MAX_IFNAME_LEN, "{s:?}");
        assert!(!s.contains('/') && !s.contains(':'), "{s:?}");
        assert!(!s.chars().any(char::is_whitespace), "{s:?}");
        assert!(s != "." && s != "..", "{s:?}");
    }
    if naming::validate_container_id(s).is_ok() {
        assert!(s.len() <= naming::MAX_CONTAINER_ID_LEN && s.is_ascii(), "{s:?}");
        for ifname in ["net1", "net2", "fifteen-chars-x"] {
            for name in [
                naming::vrf_name(s, ifname),
                naming::bridge_name(s, ifname),
                naming::host_veth_name(s, ifname),
            ] {
                naming::validate_ifname(&name).unwrap_or_else(|e| {
                    panic!("container ID {s:?} on {ifname} gives a bad device name: {e}")
                });
            }
        }
        let table = naming::derived_table(&naming::vrf_name(s, "net1"));
        assert!(naming::DERIVED_TABLE_RANGE.contains(&table));
        assert!(!naming::RESERVED_TABLES.contains(&table));
        assert_eq!(naming::first_free_table(table, |_| false), Some(table));
    }
    if naming::validate_network_name(s).is_ok() {
        assert!(s.len() <= naming::MAX_NETWORK_NAME_LEN && s.is_ascii(), "{s:?}");
        for name in [naming::shared_vrf_name(s), naming::shared_bridge_name(s)] {
            naming::validate_ifname(&name)
                .unwrap_or_else(|e| panic!("network {s:?} gives a bad device name: {e}"));
        }
        let mark = naming::network_mark(s);
        assert!(naming::is_krafty_mark(Some(&mark)));
        assert_eq!(naming::attachment_of(&mark, s), None, "{mark:?}");
    }
}

/// Marks name exactly their network, container and interface, and fit the kernel's alias:
/// line 0 a network, line 1 a container ID, line 2 an interface name, the other lines other
/// networks.
fn check_marks(lines: &[&str]) {
    let [network, container_id, ifname, others @ ..] = lines else {
        return;
    };
    if naming::validate_network_name(network).is_err()
        || naming::validate_container_id(container_id).is_err()
        || naming::validate_ifname(ifname).is_err()
    {
        return;
    }
    let mark = naming::attachment_mark(network, container_id, ifname);
    assert!(naming::is_krafty_mark(Some(&mark)));
    let identity = Some((*container_id, *ifname));
    assert_eq!(naming::attachment_of(&mark, network), identity);
    let flagged = format!("{mark} {}", naming::HAIRPIN_FLAG);
    assert!(flagged.len() <= 255, "{flagged:?} is longer than the kernel keeps");
    assert_eq!(naming::attachment_of(&flagged, network), identity);
    for other in others {
        if other != network && naming::validate_network_name(other).is_ok() {
            assert_eq!(
                naming::attachment_of(&mark, other),
                None,
                "the mark {mark:?} of network {network:?} is claimed by network {other:?}"
            );
        }
    }
}
