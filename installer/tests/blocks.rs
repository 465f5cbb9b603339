//! Address blocks claimed by node agents through the Kubernetes API, against an in-process
//! fake API server (`common::fake_api`; no API server can run here), with the real plugins
//! (through libcni) handing out addresses from the blocks files the agents write.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use krafty_cni::blocks::{usable_count, NetworkBlocks};
use krafty_installer::blocks::pool::parse_pools;
use krafty_installer::blocks::{block_name, run, AddressPool, BlockAgent};
use krafty_installer::metrics::Metrics;
use krafty_tests::{address_of, blocks_network, container_id, Node, Pod};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use common::fake_api::FakeApi;

const GRACE: Duration = Duration::from_secs(600);

/// An API server, and a multi-node network of one subnet: its pool and its conflist.
fn setup(
    network: &str,
    subnet: &str,
    gateway: &str,
    block_prefix: u8,
) -> (FakeApi, Vec<AddressPool>, Value) {
    let text = format!(
        r#"[{{"network": "{network}", "subnets": [
            {{"subnet": "{subnet}", "gateway": "{gateway}", "blockPrefix": {block_prefix}}}]}}]"#
    );
    let pools = parse_pools("test", &text).unwrap();
    (
        FakeApi::new(),
        pools,
        blocks_network(network, &[(subnet, gateway)]),
    )
}

/// A node of the test harness with its agent, named `name` in the API.
struct AgentNode {
    name: String,
    node: Node,
    agent: BlockAgent,
    metrics: Arc<Metrics>,
}

fn agent_node(api: &FakeApi, name: &str, pools: &[AddressPool]) -> AgentNode {
    api.add_node(name);
    let node = Node::new();
    let metrics = Arc::new(Metrics::new(&[]));
    let agent = BlockAgent::new(
        api.client(),
        name.into(),
        pools.to_vec(),
        node.state_dir(),
        GRACE,
        Arc::clone(&metrics),
    );
    AgentNode {
        name: name.into(),
        node,
        agent,
        metrics,
    }
}

impl AgentNode {
    /// The line of the agent's metric `name` for `network`'s `subnet`.
    fn metric(&self, name: &str, network: &str, subnet: &str) -> String {
        let series =
            format!("krafty_installer_{name}{{network=\"{network}\",subnet=\"{subnet}\"}} ");
        self.metrics
            .encode()
            .lines()
            .find(|line| line.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series}"))
            .to_string()
    }

    /// The IPv4 blocks in the node's blocks file.
    fn file_blocks(&self, network: &str) -> Vec<IpNet> {
        NetworkBlocks::new(&self.node.state_dir(), network)
            .read()
            .unwrap()
            .map(|file| file.families[0].blocks.clone())
            .unwrap_or_default()
    }
}

/// The addresses of each family's blocks on `node` that no pod holds.
fn free_per_family(node: &Node, network: &str) -> Vec<u128> {
    let files = NetworkBlocks::new(&node.state_dir(), network);
    let leased = files.leased().unwrap();
    let Some(file) = files.read().unwrap() else {
        return Vec::new();
    };
    file.families
        .iter()
        .map(|family| {
            let usable: u128 = family
                .blocks
                .iter()
                .map(|block| usable_count(family.subnet, family.gateway, *block))
                .sum();
            let used = leased
                .iter()
                .filter(|ip| family.blocks.iter().any(|block| block.contains(*ip)))
                .count() as u128;
            usable - used
        })
        .collect()
}

/// One pod attached through libcni; `Err` holds the CNI error when ADD failed.
fn add(node: &Node, conflist: &Value, label: &str) -> (Pod, String, Result<IpAddr, Value>) {
    let pod = node.pod(label);
    let id = container_id();
    let outcome = node.cni(
        "add",
        &node.conflist(conflist.clone()),
        &id,
        &pod.netns_path(),
    );
    let address = if outcome.success {
        Ok(address_of(&outcome.json(), false).parse().unwrap())
    } else {
        Err(outcome.json())
    };
    (pod, id, address)
}

fn del_all(node: &Node, conflist: &Value, attached: &[(Pod, String)]) {
    let list = node.conflist(conflist.clone());
    for (pod, id) in attached {
        node.cni("del", &list, id, &pod.netns_path()).ok();
    }
}

/// ADDs pods until ADD answers code 11 (which must mention `full`); returns their addresses,
/// after DELs of every pod.
fn fill(node: &Node, conflist: &Value, blocks: &[IpNet]) -> Vec<IpAddr> {
    let mut attached = Vec::new();
    let mut addresses = Vec::new();
    loop {
        let (pod, id, address) = add(node, conflist, &format!("f{}", addresses.len()));
        attached.push((pod, id));
        match address {
            Ok(address) => {
                assert!(
                    blocks.iter().any(|block| block.contains(&address)),
                    "{address} is outside the node's blocks {blocks:?}"
                );
                addresses.push(address);
            }
            Err(error) => {
                assert_eq!(error["code"], 11, "{error}");
                assert!(
                    error["msg"].as_str().unwrap().contains("are full"),
                    "{error}"
                );
                break;
            }
        }
    }
    del_all(node, conflist, &attached);
    addresses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_agents_claim_disjoint_blocks_and_an_exhausted_subnet_answers_11() {
    // 16 blocks of 8 addresses for 20 nodes. Lists answer empty, so every agent goes for
    // blocks others hold and only AlreadyExists keeps the claims apart.
    let (api, pools, conflist) = setup("pool", "172.16.90.0/25", "172.16.90.1", 29);
    api.set_stale_lists(true);
    let nodes: Vec<AgentNode> = (0..20)
        .map(|n| agent_node(&api, &format!("node-{n:02}"), &pools))
        .collect();

    let mut tasks = Vec::new();
    for mut node in nodes {
        tasks.push(tokio::spawn(async move {
            let report = node.agent.sync().await.expect("the sync works");
            (node, report)
        }));
    }
    let mut nodes = Vec::new();
    let mut exhausted = 0;
    for task in tasks {
        let (node, report) = task.await.unwrap();
        assert!(report.claimed.len() <= 1, "{report:?}");
        exhausted += usize::from(!report.exhausted.is_empty());
        nodes.push(node);
    }

    // A second pass, lists still lagging: every node finds its own blocks (AlreadyExists
    // for a block of its own is not a loss) and keeps them.
    let mut tasks = Vec::new();
    for mut node in nodes {
        tasks.push(tokio::spawn(async move {
            let report = node.agent.sync().await.expect("the sync works");
            assert!(
                report.claimed.is_empty() && report.dropped.is_empty(),
                "{report:?}"
            );
            node
        }));
    }
    let mut nodes = Vec::new();
    for task in tasks {
        nodes.push(task.await.unwrap());
    }

    let holders = api.holders();
    assert_eq!(holders.len(), 16, "every block is claimed: {holders:?}");
    assert_eq!(exhausted, 4, "four nodes found no block left");
    assert!(
        api.already_exists() >= 4 * 16,
        "the exhausted nodes were refused every block ({} refusals)",
        api.already_exists()
    );
    let mut claimed = BTreeSet::new();
    for node in &nodes {
        let in_file = node.file_blocks("pool");
        let in_api: Vec<IpNet> = holders
            .iter()
            .filter(|(_, holder)| *holder == node.name)
            .map(|(cidr, _)| cidr.parse().unwrap())
            .collect();
        assert_eq!(
            in_file, in_api,
            "{}'s file lists what the API holds",
            node.name
        );
        for block in in_file {
            assert!(claimed.insert(block), "{block} claimed twice");
        }
    }
    // Each object is named after its block and owned by its node.
    for (name, block) in api.blocks() {
        let (cidr, node) = (&block["spec"]["cidr"], &block["spec"]["node"]);
        assert_eq!(
            name,
            block_name("pool", cidr.as_str().unwrap().parse().unwrap())
        );
        let owner = &block["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Node");
        assert_eq!(owner["name"], *node);
        assert_eq!(owner["uid"], api.node_uid(node.as_str().unwrap()));
        assert_eq!(block["metadata"]["labels"]["krafty.io/network"], "pool");
    }

    // ADD on a node without a block answers 11 and takes nothing.
    let starved = nodes
        .iter()
        .find(|n| n.file_blocks("pool").is_empty())
        .unwrap();
    assert!(
        !starved.agent.needs_claim(),
        "an exhausted subnet waits for the next resync"
    );
    let (pod, id, refused) = add(&starved.node, &conflist, "starved");
    let error = refused.unwrap_err();
    assert_eq!(error["code"], 11, "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("no IPv4 address block on node"),
        "{error}"
    );
    assert!(starved.node.block_leases("pool").is_empty());
    assert!(starved.node.records().is_empty());
    del_all(&starved.node, &conflist, &[(pod, id)]);
    starved.node.gc(&conflist, &[]).ok();
    starved.node.assert_clean();

    // Two nodes fill their blocks at once: each until code 11, never the same address.
    let with_blocks: Vec<&AgentNode> = nodes
        .iter()
        .filter(|n| !n.file_blocks("pool").is_empty())
        .take(2)
        .collect();
    let fill_node = |node: &AgentNode| fill(&node.node, &conflist, &node.file_blocks("pool"));
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| fill_node(with_blocks[0]));
        let second = scope.spawn(|| fill_node(with_blocks[1]));
        (first.join().unwrap(), second.join().unwrap())
    });
    assert!(
        first.len() >= 6 && second.len() >= 6,
        "{first:?} {second:?}"
    );
    let all: BTreeSet<&IpAddr> = first.iter().chain(&second).collect();
    assert_eq!(
        all.len(),
        first.len() + second.len(),
        "an address on both nodes"
    );
    for node in with_blocks {
        node.node.gc(&conflist, &[]).ok();
        node.node.assert_clean();
    }
}

#[tokio::test]
async fn the_next_block_is_claimed_before_the_blocks_run_out() {
    let (api, pools, conflist) = setup("grow", "172.16.91.0/26", "172.16.91.1", 29);
    let subnet = pools[0].subnets[0];
    let mut node = agent_node(&api, "grower", &pools);

    assert!(node.agent.needs_claim(), "no blocks file yet");
    let report = node.agent.sync().await.unwrap();
    assert_eq!(report.claimed.len(), 1, "{report:?}");
    let usable = usable_count(subnet.subnet, subnet.gateway, report.claimed[0]);
    assert!(!node.agent.needs_claim());

    // Pods take addresses until a quarter of a block (2) is left: then the agent claims.
    let mut attached = Vec::new();
    for n in 0..usable - subnet.claim_threshold() {
        assert!(!node.agent.needs_claim(), "after {n} pods");
        let (pod, id, address) = add(&node.node, &conflist, &format!("g{n}"));
        address.unwrap();
        attached.push((pod, id));
    }
    assert!(node.agent.needs_claim(), "two addresses left");
    let report = node.agent.sync().await.unwrap();
    assert_eq!(report.claimed.len(), 1, "{report:?}");
    assert!(!node.agent.needs_claim());
    assert_eq!(node.file_blocks("grow").len(), 2);
    let series = |name| node.metric(name, "grow", "172.16.91.0/26");
    assert!(series("address_blocks").ends_with(" 2"));
    let free = free_per_family(&node.node, "grow")[0];
    assert!(series("address_blocks_free_addresses").ends_with(&format!(" {free}")));
    assert!(free > subnet.claim_threshold());
    assert!(series("address_subnet_exhausted").ends_with(" 0"));

    // The pods that follow never wait: the first block's last two, then the new block.
    for n in 0..3 {
        let (pod, id, address) = add(&node.node, &conflist, &format!("h{n}"));
        let address = address.unwrap();
        assert!(
            node.file_blocks("grow")
                .iter()
                .any(|b| b.contains(&address)),
            "{address}"
        );
        attached.push((pod, id));
    }
    del_all(&node.node, &conflist, &attached);
    node.node.gc(&conflist, &[]).ok();
    node.node.assert_clean();
}

#[tokio::test]
async fn a_deleted_nodes_blocks_are_reclaimed_after_the_grace_period() {
    // Two blocks, three nodes: the third has none until the first's Node is deleted.
    let (api, pools, conflist) = setup("reuse", "172.16.92.0/28", "172.16.92.1", 29);
    let mut a = agent_node(&api, "a", &pools);
    let mut b = agent_node(&api, "b", &pools);
    let mut c = agent_node(&api, "c", &pools);
    a.agent.sync().await.unwrap();
    b.agent.sync().await.unwrap();
    let report = c.agent.sync().await.unwrap();
    assert_eq!(report.exhausted.len(), 1, "{report:?}");
    let exhausted = c.metric("address_subnet_exhausted", "reuse", "172.16.92.0/28");
    assert!(exhausted.ends_with(" 1"), "{exhausted}");
    let refused = add(&c.node, &conflist, "waits").2;
    assert_eq!(refused.unwrap_err()["code"], 11);
    let a_block = a.file_blocks("reuse")[0];

    // The Node goes without a garbage collector to take its blocks along.
    api.delete_node("a", false);
    let start = Instant::now();
    for agent in [&mut b.agent, &mut c.agent] {
        assert_eq!(agent.reclaim(start).await.unwrap(), Vec::<String>::new());
    }
    let almost = start + GRACE - Duration::from_secs(1);
    assert_eq!(c.agent.reclaim(almost).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        c.agent.reclaim(start + GRACE).await.unwrap(),
        [block_name("reuse", a_block)]
    );
    // b saw the same absence, but the block is c's by now: nothing for b to delete.
    let report = c.agent.sync().await.unwrap();
    assert_eq!(report.claimed, [a_block]);
    assert_eq!(
        b.agent.reclaim(start + GRACE).await.unwrap(),
        Vec::<String>::new()
    );
    let address = add(&c.node, &conflist, "got").2.unwrap();
    assert!(a_block.contains(&address), "{address}");

    // Node a comes back (a new uid): the block is c's now, so a's file gives it up and a,
    // with no block left to claim, answers 11.
    api.add_node("a");
    let report = a.agent.sync().await.unwrap();
    assert_eq!(report.dropped, [a_block]);
    assert_eq!(a.file_blocks("reuse"), Vec::<IpNet>::new());
    assert_eq!(add(&a.node, &conflist, "late").2.unwrap_err()["code"], 11);

    // GC (no valid attachment) releases every lease: nothing is left on either node.
    for node in [&a.node, &c.node] {
        node.gc(&conflist, &[]).ok();
        node.assert_clean();
    }
}

#[test]
fn a_broken_pools_file_stops_the_agent() {
    let dirs = common::Dirs::with_plugins();
    let pools = dirs.root.path().join("pools.json");
    std::fs::write(&pools, r#"[{"network": "Lab", "subnets": []}]"#).unwrap();
    let pools = pools.to_str().unwrap();
    let output = common::Daemon::command(&dirs, &["--address-pools", pools])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("must be a DNS label"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_agent_claims_both_families_and_more_as_pods_come() {
    let api = FakeApi::new();
    let text = r#"[{"network": "live", "subnets": [
        {"subnet": "172.16.93.0/24", "gateway": "172.16.93.1", "blockPrefix": 29},
        {"subnet": "fd10:93::/120", "gateway": "fd10:93::1", "blockPrefix": 125}]}]"#;
    let pools = parse_pools("test", text).unwrap();
    let subnets = [
        ("172.16.93.0/24", "172.16.93.1"),
        ("fd10:93::/120", "fd10:93::1"),
    ];
    let conflist = blocks_network("live", &subnets);
    let AgentNode { node, agent, .. } = agent_node(&api, "runner", &pools);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(run(agent, shutdown.clone()));
    let families = |node: &Node| -> Vec<usize> {
        NetworkBlocks::new(&node.state_dir(), "live")
            .read()
            .unwrap()
            .map(|file| file.families.iter().map(|f| f.blocks.len()).collect())
            .unwrap_or_default()
    };
    let node = tokio::task::spawn_blocking(move || {
        assert!(
            common::eventually(|| families(&node) == [1, 1]),
            "a block of each family, at start: {:?}",
            families(&node)
        );
        // Pods keep coming; the agent keeps ahead of them without a single code 11.
        let mut attached = Vec::new();
        for n in 0..12 {
            let (pod, id, address) = add(&node, &conflist, &format!("r{n}"));
            address.unwrap_or_else(|error| panic!("pod {n}: {error}"));
            attached.push((pod, id));
            // The agent looks at the leases every second: within that, each family has more
            // than a quarter of a block (2) free again.
            assert!(
                common::eventually(|| free_per_family(&node, "live").iter().all(|free| *free > 2)),
                "after pod {n}: free {:?}",
                free_per_family(&node, "live")
            );
        }
        assert!(families(&node).iter().all(|count| *count >= 2));
        del_all(&node, &conflist, &attached);
        node.gc(&conflist, &[]).ok();
        node.assert_clean();
        node
    })
    .await
    .unwrap();
    shutdown.cancel();
    running.await.unwrap();
    let held: Vec<(String, String)> = api.holders();
    assert!(held.iter().all(|(_, holder)| holder == "runner"));
    assert_eq!(held.len(), families(&node).iter().sum::<usize>());
}
