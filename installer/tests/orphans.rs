//! The reconciler with the real cleaner against real attachments: ADD through libcni with the
//! real host-local in a hermetic node namespace, a pod namespace deleted without DEL (a node
//! reboot or a runtime crash), then one scan. The pod list is the only stand-in: it is what
//! the pod watch would hand over, and no API server can run here.

mod common;

use krafty_cni::state::Records;
use krafty_installer::attachments::{AttachmentCleaner, PodsOnNode, StoredRecord};
use krafty_installer::cluster::events::Notice;
use krafty_tests::several::Attached;
use krafty_tests::{container_id, pod_network, shared_network, Node};

use common::node_agent;

/// One scan of `node` against `pods`: the container IDs cleaned up and failed, how many were
/// kept, and the Events sent.
fn reconcile_in(node: &Node, pods: PodsOnNode) -> (Vec<String>, Vec<String>, usize, Vec<Notice>) {
    let (summary, sent) = node_agent::reconcile(node, pods);
    let ids = |records: &[StoredRecord]| {
        records
            .iter()
            .map(|stored| stored.record.container_id.clone())
            .collect::<Vec<_>>()
    };
    (
        ids(&summary.cleaned),
        ids(&summary.failed),
        summary.kept,
        sent,
    )
}

#[test]
fn an_orphan_is_cleaned_up_and_live_attachments_are_untouched() {
    let node = Node::new();
    // A pod-scope network each: without VRFs, two pods of one such network cannot share a node.
    let [orphan_list, live_list, mid_teardown_list] = [12, 13, 14].map(|subnet| {
        node.conflist(pod_network(
            &format!("net-{subnet}"),
            &format!("172.16.{subnet}.0/24"),
            &format!("172.16.{subnet}.1"),
            false,
        ))
    });
    let (orphan, live, mid_teardown) = (container_id(), container_id(), container_id());
    let orphan_pod = node.pod("orphan");
    let live_pod = node.pod("live");
    let mid_teardown_pod = node.pod("teardown");
    for (list, id, pod) in [
        (&orphan_list, &orphan, &orphan_pod),
        (&live_list, &live, &live_pod),
        (&mid_teardown_list, &mid_teardown, &mid_teardown_pod),
    ] {
        node.cni("add", list, id, &pod.netns_path()).ok();
    }
    assert_eq!(node.all_leases().len(), 3);
    let live_links_before = node
        .link_names()
        .into_iter()
        .filter(|name| name.contains(&live[..11]))
        .collect::<Vec<_>>();
    assert_eq!(live_links_before.len(), 2, "the live pod's bridge and veth");

    // The runtime never sent DEL: the orphan's pod is gone from the API and its netns with it.
    orphan_pod.destroy();
    // The live pod still exists, and so does the pod of an attachment whose netns is already
    // gone (the runtime is tearing it down): the runtime owns both.
    mid_teardown_pod.destroy();
    let mut pods = PodsOnNode::default();
    for id in [&live, &mid_teardown] {
        pods.insert("default", &format!("pod-{id}"), Some(&format!("uid-{id}")));
    }

    let (cleaned, failed, kept, notices) = reconcile_in(&node, pods);
    assert_eq!(cleaned, vec![orphan.clone()]);
    assert_eq!(failed, Vec::<String>::new());
    assert_eq!(kept, 2);
    assert!(
        matches!(&notices[..], [Notice::AttachmentCleanedUp(stored)] if stored.attachment.container_id() == orphan),
        "one Event about the orphan: {notices:?}"
    );

    let names = node.link_names();
    assert!(
        !names.iter().any(|name| name.contains(&orphan[..11])),
        "the orphan's devices are gone: {names:?}"
    );
    for name in &live_links_before {
        assert!(
            names.contains(name),
            "{name} of the live pod is still there"
        );
    }
    assert!(
        names.iter().any(|name| name.contains(&mid_teardown[..11])),
        "the pod being torn down keeps its devices"
    );
    let leases = node.all_leases();
    assert_eq!(
        leases.len(),
        2,
        "only the orphan's lease is released: {leases:?}"
    );
    assert!(node.leases("net-12").is_empty());
    let records = node.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(!records.iter().any(|r| r.contains(&orphan)));

    // Once the pod being torn down is gone from the API too, the next scan takes it; the live
    // pod's netns still exists, so it is kept even with no pod listed.
    let (cleaned, failed, kept, _) = reconcile_in(&node, PodsOnNode::default());
    assert_eq!(failed, Vec::<String>::new());
    assert_eq!(cleaned, vec![mid_teardown.clone()]);
    assert_eq!(kept, 1);

    // The runtime's own DELs still succeed afterwards, cleaned up or not.
    node.cni("del", &live_list, &live, &live_pod.netns_path())
        .ok();
    for (list, id) in [(&orphan_list, &orphan), (&mid_teardown_list, &mid_teardown)] {
        node.cni("del", list, id, "").ok();
    }
    node.assert_clean();
}

/// Runs the real cleaner on one stored record inside `node`'s network namespace.
fn clean_up_in(node: &Node, stored: StoredRecord) {
    let cleaner = node_agent::cleaner(node);
    node_agent::in_node(node, move |_, runtime| {
        runtime
            .block_on(cleaner.clean_up(&stored))
            .expect("the cleanup succeeds")
    });
}

#[test]
fn the_cleanup_of_one_attachment_leaves_the_pods_other_one_working() {
    let node = Node::new();
    let pod = node.pod("p");
    let id = container_id();
    let blue = pod_network("blue", "172.16.41.0/24", "172.16.41.1", false);
    let green = pod_network("green", "172.16.42.0/24", "172.16.42.1", false);
    let net1 = Attached::add(&node, &blue, &pod, &id, "net1");
    let net2 = Attached::add(&node, &green, &pod, &id, "net2");
    let shared = shared_network("shared", &[("172.16.43.0/24", "172.16.43.1")], false);
    let net3 = Attached::add(&node, &shared, &pod, &id, "net3");
    let net4 = Attached::add(&node, &shared, &pod, &id, "net4");
    let (net1_before, net3_before) = (net1.snapshot(&node, &pod), net3.snapshot(&node, &pod));

    // Each record is an attachment of its own: cleaning up net2 and net4 leaves net1 and net3,
    // of the same pod (and, for net3, of the same network), whole and working.
    let (records, errors) = Records::new(&node.state_dir()).list_all();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(records.len(), 4);
    for gone in [&net2, &net4] {
        let stored = records
            .iter()
            .find(|r| r.attachment == gone.attachment())
            .expect("a record per attachment")
            .clone();
        clean_up_in(&node, stored);
    }
    for gone in [&net2, &net4] {
        assert!(gone.own_devices(&node).is_empty(), "{}", gone.attachment());
        assert!(gone.leases(&node).is_empty());
        assert!(!gone.has_record(&node));
    }
    assert_eq!(net1.snapshot(&node, &pod), net1_before);
    assert_eq!(net3.snapshot(&node, &pod), net3_before);

    // Orphaned when its pod is gone: the scan takes the other two, one by one.
    pod.destroy();
    let (cleaned, failed, kept, _) = reconcile_in(&node, PodsOnNode::default());
    assert_eq!(cleaned.len(), 2, "{cleaned:?}");
    assert_eq!((failed.len(), kept), (0, 0));
    node.gc(&shared, &[]).ok();
    node.assert_clean();
}

#[test]
fn an_orphan_of_a_multi_node_network_gives_its_block_address_back() {
    let node = Node::new();
    let subnet = ("172.16.62.0/24", "172.16.62.1");
    node.write_blocks(
        "orphanblocks",
        &[(subnet.0, subnet.1, &["172.16.62.128/26"])],
    );
    let list = node.conflist(krafty_tests::blocks_network("orphanblocks", &[subnet]));
    let (orphan, live) = (container_id(), container_id());
    let (orphan_pod, live_pod) = (node.pod("orphan"), node.pod("live"));
    for (id, pod) in [(&orphan, &orphan_pod), (&live, &live_pod)] {
        node.cni("add", &list, id, &pod.netns_path()).ok();
    }
    assert_eq!(node.block_leases("orphanblocks").len(), 2);

    orphan_pod.destroy();
    let mut pods = PodsOnNode::default();
    pods.insert(
        "default",
        &format!("pod-{live}"),
        Some(&format!("uid-{live}")),
    );
    let (cleaned, failed, kept, _) = reconcile_in(&node, pods);
    assert_eq!((cleaned, failed, kept), (vec![orphan], Vec::new(), 1));
    // The orphan's lease in the node's block is released in process (krafty-blocks has no
    // binary to run); the live pod keeps its own.
    let live_address = node.block_leases("orphanblocks");
    assert_eq!(live_address.len(), 1);
    assert_eq!(
        live_pod.addresses("net1")[0],
        format!("{}/24", live_address[0])
    );
    node.cni("del", &list, &live, &live_pod.netns_path()).ok();
    node.gc(
        &krafty_tests::blocks_network("orphanblocks", &[subnet]),
        &[],
    )
    .ok();
    node.assert_clean();
}
