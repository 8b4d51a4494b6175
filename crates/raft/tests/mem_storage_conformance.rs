//! The in-memory store passes the same public conformance suite as the node's sled store
//! (one suite, every implementation).

use flotilla_raft::MemStorage;
use flotilla_raft::testing::Suite;

#[test]
fn mem_storage_passes_the_conformance_suite() {
    Suite::test_all(MemStorage::new);
}

#[test]
fn bootstrapped_mem_storage_passes_the_conformance_suite() {
    Suite::test_bootstrapped(MemStorage::new_with_conf_state);
}
