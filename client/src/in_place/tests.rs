//! Tests for the in-place decision: read in place only when every connected node's roots cover
//! every input file, and the job's own wishes first.

use super::*;
use crate::split::SplitRule;

fn node(name: &str, host_id: &str, roots: &[&Path]) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        address: "127.0.0.1:1".into(),
        host_id: host_id.into(),
        shared_input_roots: roots.iter().map(|root| root.display().to_string()).collect(),
        ..NodeStatus::default()
    }
}

#[track_caller]
fn check(job: &JobDescription, nodes: &[&NodeStatus], expect: Option<InputRoute>) {
    let nodes: Vec<NodeStatus> = nodes.iter().map(|node| (*node).clone()).collect();
    assert_eq!(decide(job, Readers::Listed { nodes: &nodes, host_id: "here" }), expect);
}

#[test]
fn reads_in_place_only_when_every_connected_node_can() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical");
    let (data, elsewhere) = (root.join("data"), root.join("elsewhere"));
    std::fs::create_dir_all(&data).expect("dir");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    std::fs::write(data.join("a.bin"), b"0123456789").expect("file");
    std::fs::write(elsewhere.join("b.bin"), b"abc").expect("file");
    let mut job = JobDescription::new("p.wasm".into(), SplitRule::Bytes(4), "out".into());
    job.inputs = vec![data.join("a.bin")];
    let same = node("n1", "here", &[&data]);
    let shared = node("n2", "there", &[Path::new("/nonexistent"), &root]);
    let lacking = node("n3", "here", &[&elsewhere]);
    let bare = node("n4", "there", &[]);
    let away = NodeStatus { address: "-".into(), ..bare.clone() };

    let in_place = |same_host: &[&str], shared_storage: &[&str]| {
        let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Some(InputRoute::InPlace { same_host: names(same_host), shared_storage: names(shared_storage) })
    };
    check(&job, &[&same, &shared], in_place(&["n1"], &["n2"]));
    check(&job, &[&same, &away], in_place(&["n1"], &[]));
    let unreadable = |nodes: &[&str]| Some(InputRoute::ShippedUnreadable { nodes: nodes.iter().map(|n| (*n).to_owned()).collect() });
    check(&job, &[&same, &lacking, &bare], unreadable(&["n3", "n4"]));
    check(&job, &[], Some(InputRoute::ShippedNoNodes));

    // Every file must be covered: n3 reads only the second.
    job.inputs.push(elsewhere.join("b.bin"));
    check(&job, &[&shared], in_place(&[], &["n2"]));
    check(&job, &[&shared, &lacking], unreadable(&["n3"]));

    // A path that leads below a root through `..` counts by where it lands.
    job.inputs = vec![elsewhere.join("../data/a.bin")];
    check(&job, &[&same], in_place(&["n1"], &[]));

    // The job's own wishes come first; rules other than bytes, and non-files, are shipped.
    let mut asked = job.clone();
    asked.ship_input = true;
    check(&asked, &[&same], Some(InputRoute::ShippedAsked));
    asked.ship_input = false;
    asked.shared_input = true;
    check(&asked, &[&bare], Some(InputRoute::InPlaceAsked));
    let mut lines = job.clone();
    lines.split = SplitRule::Lines(2);
    check(&lines, &[&same], Some(InputRoute::ShippedNotByteRanges));
    let mut missing = job.clone();
    missing.inputs = vec![data.join("missing.bin")];
    check(&missing, &[&same], Some(InputRoute::ShippedNotByteRanges));
    let mut range = JobDescription::new("p.wasm".into(), SplitRule::Bytes(4), "out".into());
    check(&range, &[&same], None);
    range.inputs = vec!["s3://logs/a".into()];
    check(&range, &[&same], None);
    assert_eq!(decide(&job, Readers::Local), Some(InputRoute::InPlaceLocal));
}

#[test]
fn applying_a_route_sets_shared_input_with_absolute_paths() {
    let mut job = JobDescription::new("p.wasm".into(), SplitRule::Bytes(4), "out".into());
    job.inputs = vec!["relative.bin".into()];
    apply(&mut job, &InputRoute::ShippedNoNodes);
    assert!(!job.shared_input);
    assert_eq!(job.inputs, [PathBuf::from("relative.bin")]);
    apply(&mut job, &InputRoute::InPlaceLocal);
    assert!(job.shared_input);
    assert!(job.inputs[0].is_absolute() && job.inputs[0].ends_with("relative.bin"), "{:?}", job.inputs);
}

#[test]
fn routes_read_as_one_line_each() {
    let route = InputRoute::InPlace { same_host: vec!["n1".into()], shared_storage: vec!["n2".into(), "n3".into()] };
    assert_eq!(
        route.to_string(),
        "input read in place by the nodes, not shipped: n1 on this host; n2, n3 from shared storage (--ship-input ships it)"
    );
    assert_eq!(route.name(), "in place");
    let shipped = InputRoute::ShippedUnreadable { nodes: vec!["n3".into()] };
    assert_eq!(
        shipped.to_string(),
        "input shipped through the dispatcher (n3 cannot read it in place: outside their shared_input_roots)"
    );
    assert_eq!(shipped.name(), "shipped");
}
