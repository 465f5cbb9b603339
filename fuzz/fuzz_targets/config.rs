//! Network configs: bytes -> JSON -> `NetConf<T>` of every plugin -> `validate()`, plus the path
//! checks (`logFile`, `stateDir`) on every string of the document. Nothing may panic, and what
//! validation accepts must hold what it promises.
#![no_main]

use std::path::{Component, Path};

use krafty_cni::config::{
    self, BridgeConfig, NetConf, OriginalConfig, RuntimeRequest, Scope, VethConfig, VrfConfig,
};
use krafty_cni::naming::RESERVED_TABLES;
use krafty_cni::CniResult;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A log/state root that is not the default one, to exercise both.
const OTHER_ROOT: &str = "/tmp/krafty-fuzz-root";

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for_each_string(&value, &mut check_paths);

    // Through NetConf (serde's flatten path) and on its own (the plain struct path).
    if let Ok(conf) = serde_json::from_value::<NetConf<VrfConfig>>(value.clone()) {
        common(&conf);
        check_vrf(&conf.plugin);
    }
    if let Ok(conf) = serde_json::from_value::<NetConf<BridgeConfig>>(value.clone()) {
        common(&conf);
        check_bridge(&conf.plugin);
    }
    if let Ok(conf) = serde_json::from_value::<NetConf<VethConfig>>(value.clone()) {
        common(&conf);
        check_veth(&conf.plugin);
    }
    if let Ok(conf) = serde_json::from_value::<NetConf<OriginalConfig>>(value.clone()) {
        common(&conf);
        check_original(&conf.plugin);
    }
    if let Ok(plugin) = serde_json::from_value::<VrfConfig>(value.clone()) {
        check_vrf(&plugin);
    }
    if let Ok(plugin) = serde_json::from_value::<BridgeConfig>(value.clone()) {
        check_bridge(&plugin);
    }
    if let Ok(plugin) = serde_json::from_value::<VethConfig>(value) {
        check_veth(&plugin);
    }
});

/// What the skeleton does with the shared fields before a plugin sees them.
fn common<T>(conf: &NetConf<T>) {
    let _ = krafty_cni::naming::validate_network_name(&conf.name);
    if let Err(e) = config::log_file(conf.log_file.as_deref(), None) {
        assert_eq!(e.code(), 7, "{e}");
    }
    if let Err(e) = config::state_dir(conf.state_dir.as_deref(), None) {
        assert_eq!(e.code(), 7, "{e}");
    }
    if let Some(prev) = &conf.prev_result {
        if let Err(e) = CniResult::from_value(prev.clone(), "prevResult") {
            assert_eq!(e.code(), 6, "{e}");
        }
    }
    let runtime = conf.runtime_config.clone().unwrap_or_default();
    match RuntimeRequest::from_config(&runtime, conf.args.as_ref()) {
        Ok(request) => {
            if let Some(ips) = &request.ips {
                assert!(!ips.is_empty() && ips.len() <= 2, "{ips:?}");
            }
            if let Some(mac) = request.mac {
                assert!(mac[0] & 1 == 0 && mac != [0; 6], "{mac:?}");
            }
        }
        Err(e) => assert_eq!(e.code(), 7, "{e}"),
    }
}

/// The `krafty` plugin's config is the three steps' at once, in one scope: the network's when a
/// `vrfTable` names its table and no `scope` says otherwise.
fn check_original(plugin: &OriginalConfig) {
    check_vrf(&plugin.vrf);
    check_bridge(&plugin.bridge);
    check_veth(&plugin.veth);
    match plugin.validate() {
        Ok(valid) => {
            assert_eq!(valid.vrf.scope, valid.bridge.scope, "{valid:?}");
            if valid.vrf.table.is_some() {
                assert_eq!(valid.vrf.scope, Scope::Network, "{valid:?}");
            }
        }
        Err(e) => assert_eq!(e.code(), 7, "{e}"),
    }
}

fn check_vrf(plugin: &VrfConfig) {
    match plugin.validate() {
        Ok(valid) => {
            if let Some(table) = valid.table {
                assert!(!RESERVED_TABLES.contains(&table), "{table}");
                assert_eq!(plugin.vrf_table, Some(i64::from(table)));
            }
        }
        Err(e) => assert_eq!(e.code(), 7, "{e}"),
    }
}

fn check_bridge(plugin: &BridgeConfig) {
    match plugin.validate() {
        Ok(valid) => {
            assert!(matches!(valid.networks.len(), 1 | 2), "{valid:?}");
            if valid.networks.len() == 2 {
                assert_ne!(
                    valid.networks[0].subnet.addr().is_ipv4(),
                    valid.networks[1].subnet.addr().is_ipv4()
                );
            }
            for net in &valid.networks {
                assert!(net.subnet.contains(&net.gateway), "{net:?}");
                let address = net.gateway_address();
                assert_eq!(address.addr(), net.gateway, "{net:?}");
                assert_eq!(address.prefix_len(), net.subnet.prefix_len(), "{net:?}");
            }
            if let Some(mtu) = valid.mtu {
                assert!((68..=65535).contains(&mtu));
            }
            assert!(matches!(valid.scope, Scope::Pod | Scope::Network));
        }
        Err(e) => assert_eq!(e.code(), 7, "{e}"),
    }
}

fn check_veth(plugin: &VethConfig) {
    match plugin.validate() {
        Ok(valid) => {
            for route in &valid.routes {
                if let Some(gw) = route.gateway {
                    assert_eq!(gw.is_ipv4(), route.destination.addr().is_ipv4(), "{route:?}");
                }
            }
            if let Some(mtu) = valid.mtu {
                assert!((68..=65535).contains(&mtu));
            }
            if let config::AddressSource::Ipam(ipam) = &valid.addresses {
                // It becomes a file name on CNI_PATH.
                assert!(!ipam.plugin.is_empty(), "{ipam:?}");
                assert!(!ipam.plugin.contains('/'), "{ipam:?}");
                assert!(ipam.plugin != "." && ipam.plugin != "..", "{ipam:?}");
            }
        }
        Err(e) => assert_eq!(e.code(), 7, "{e}"),
    }
}

/// Any string as `logFile` and `stateDir`: what is accepted lies below the root.
fn check_paths(requested: &str) {
    for root in [None, Some(Path::new(OTHER_ROOT))] {
        let expected_root = root.unwrap_or(Path::new(config::DEFAULT_LOG_ROOT));
        match config::log_file(Some(requested), root) {
            Ok(None) => assert!(requested.is_empty()),
            Ok(Some(path)) => {
                assert_below(&path, expected_root, requested);
                assert_ne!(path, expected_root, "logFile {requested:?} is the root itself");
            }
            Err(e) => assert_eq!(e.code(), 7, "{e}"),
        }
        let expected_root = root.unwrap_or(Path::new(config::DEFAULT_STATE_ROOT));
        match config::state_dir(Some(requested), root) {
            Ok(path) => assert_below(&path, expected_root, requested),
            Err(e) => assert_eq!(e.code(), 7, "{e}"),
        }
    }
}

fn assert_below(path: &Path, root: &Path, requested: &str) {
    assert!(path.is_absolute(), "{requested:?} -> {path:?}");
    assert!(path.starts_with(root), "{requested:?} -> {path:?} is not below {root:?}");
    assert!(
        path.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{requested:?} -> {path:?} has a '..' or prefix"
    );
    assert!(!path.as_os_str().as_encoded_bytes().contains(&0), "{requested:?}");
}

fn for_each_string(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| for_each_string(v, f)),
        Value::Object(map) => {
            for (key, v) in map {
                f(key);
                for_each_string(v, f);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
