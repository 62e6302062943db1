//! Mutual TLS under the cluster CA, end to end: certificates from another CA fail the handshake
//! in either direction, a node certificate cannot act as a client, and a node with a foreign
//! certificate never joins. After each refusal the dispatcher keeps serving its own clients.

use std::path::{Path, PathBuf};

use tests::{assert_eventually, Cluster, Job, Pki};

/// A second, unrelated CA in the cluster's directory.
fn other_ca(cluster: &Cluster) -> Pki {
    Pki::init(&cluster.dir().join("other-ca"))
}

/// Makes `identity` trust the cluster's CA while keeping its foreign certificate, so it is the
/// dispatcher (not the peer) that must refuse it.
fn trust_cluster_ca(cluster: &Cluster, identity: &Path) -> PathBuf {
    std::fs::copy(cluster.pki().dir().join("ca.pem"), identity.join("ca.pem")).expect("copy ca.pem");
    identity.to_owned()
}

/// `nodes` with `identity` fails at the handshake with exit code 2 and says why.
#[track_caller]
fn check_refused_at_handshake(cluster: &Cluster, identity: &Path) {
    let run = cluster.submit_as(identity, &[&"nodes"]);
    run.check_code(2);
    let stderr = run.stderr.to_ascii_lowercase();
    assert!(stderr.contains("certificate") || stderr.contains("tls"), "no word about TLS or certificates\n{run}");
    assert!(run.stdout.is_empty(), "a refused client must not get a listing\n{run}");
}

/// The dispatcher still answers its own client.
#[track_caller]
fn check_still_serving(cluster: &mut Cluster) {
    cluster.check_all_alive();
    let run = cluster.submit(&[&"nodes", &"--json"]);
    run.check_success();
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let mut cluster = Cluster::start(0);
    let other = other_ca(&cluster);
    // Entirely foreign identity: the client does not trust the dispatcher either.
    check_refused_at_handshake(&cluster, &other.issue_client("stranger"));
    // Foreign certificate, but it trusts our CA: the dispatcher must refuse the certificate.
    let impostor = trust_cluster_ca(&cluster, &other.issue_client("impostor"));
    check_refused_at_handshake(&cluster, &impostor);
    check_still_serving(&mut cluster);
}

#[test]
fn node_certificate_cannot_submit() {
    let mut cluster = Cluster::start(1);
    let node_identity = cluster.pki().dir().join("nodes").join("n1");
    let output = cluster.output_dir("as-node").join("out.bin");
    let job = Job::new(&tests::example("checksum.wat"), "bytes:1KiB", &output).input(&tests::example("data/lorem.txt"));
    let run = cluster.submit_with(&node_identity, job.to_args(), tests::COMMAND_TIMEOUT);
    assert!(run.code.is_some_and(|c| c != 0), "a node certificate submitted a job\n{run}");
    run.check_stderr_mentions(&["certificate is for a node"]);
    assert!(!output.exists(), "no output may be written\n{run}");
    check_still_serving(&mut cluster);
}

#[test]
fn node_from_another_ca_never_joins() {
    let mut cluster = Cluster::start(1);
    let other = other_ca(&cluster);
    let failures = |cluster: &Cluster| cluster.dispatcher_log().matches("handshake failed").count();

    // A node that trusts another CA refuses the dispatcher.
    let stranger = other.issue_node("stranger");
    let index = cluster.start_node("stranger", &stranger);
    assert_eventually!(failures(&cluster) >= 1, "the stranger never tried to connect");
    cluster.node(index).kill();
    let seen = failures(&cluster);

    // A node with a foreign certificate that trusts our CA is refused by the dispatcher.
    let impostor = trust_cluster_ca(&cluster, &other.issue_node("impostor"));
    cluster.start_node("impostor", &impostor);
    assert_eventually!(failures(&cluster) > seen, "the impostor never tried to connect");

    cluster.wait_for_nodes(&["n1"]);
    let nodes = cluster.nodes_json().unwrap_or_else(|run| panic!("`nodes --json` failed\n{run}"));
    assert_eq!(nodes.len(), 1, "only n1 may be listed: {nodes:?}");
    check_still_serving(&mut cluster);
}
