//! Prints the RaftCluster CRD as YAML: `cargo run -p flotilla-operator --bin crdgen`.
//! deploy/crds/raftcluster.yaml and the chart's copy are this output, byte for byte.
fn main() -> anyhow::Result<()> {
    print!("{}", flotilla_operator::crd::crd_yaml()?);
    Ok(())
}
