//! Pods with several krafty attachments (net1 and net2), on this machine's kernel without
//! VRFs, through the real libcni and host-local. tests/vrf.rs runs the same with VRFs.

use krafty_tests::several;

#[test]
fn two_networks_in_one_pod() {
    several::two_networks_in_one_pod(false);
}

#[test]
fn one_shared_network_twice_in_one_pod() {
    several::one_network_twice_in_one_pod(false, false);
}

#[test]
fn the_same_interface_on_two_pod_scope_networks_is_refused() {
    several::the_same_interface_on_two_networks_is_refused(true, false);
}

#[test]
fn the_same_interface_on_two_shared_networks_is_refused() {
    several::the_same_interface_on_two_networks_is_refused(false, false);
}
