//! CNI results (`prevResult`, an IPAM plugin's answer): bytes -> JSON -> `CniResult`, printed
//! in every version and read again. The invariants: at 1.1.0 printing and re-reading loses
//! nothing, unknown fields included (the next plugin of the chain gets exactly what we parsed);
//! in every version printing what was read back prints the same again.
#![no_main]

use krafty_cni::{CniResult, CniVersion};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let first = match CniResult::from_value(value, "prevResult") {
        Ok(result) => result,
        Err(e) => {
            assert_eq!(e.code(), 6, "{e}");
            return;
        }
    };
    for version in CniVersion::ALL {
        let out = first.to_value(version);
        assert_eq!(out["cniVersion"], version.as_str(), "{out}");
        if let Some(ips) = out.get("ips").and_then(Value::as_array) {
            assert_eq!(ips.len(), first.ips.len(), "{out}");
            for (ip, config) in ips.iter().zip(&first.ips) {
                let family = ip.get("version");
                if version.ips_carry_family() {
                    let expected = if config.address.addr().is_ipv4() { "4" } else { "6" };
                    assert_eq!(family, Some(&Value::from(expected)), "{version}: {out}");
                } else {
                    assert_eq!(family, None, "{version} has no ips[].version: {out}");
                }
            }
        }
        // What the next plugin of the chain really receives: the printed text.
        let text = serde_json::to_vec(&out).expect("a Value always prints");
        let reread: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("printed {version} result is not JSON: {e}"));
        let again = CniResult::from_value(reread, "prevResult").unwrap_or_else(|e| {
            panic!("the {version} print of an accepted result is refused: {e}\nprinted: {out}")
        });
        if version == CniVersion::LATEST {
            assert_eq!(
                again, first,
                "the {version} print does not read back to the same result\nprinted: {out}"
            );
        }
        assert_eq!(again.to_value(version), out, "printing is not stable for {version}");
    }
});
