//! `node_provisioning_record`: node-rendezvous provisioning records (JSON lines or an array): the import parser
//! never panics, and every record it accepts survives export and re-import unchanged.
use crate::nodeprov::{parse_records, provisioning_record};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(records) = parse_records(text) else {
        return;
    };
    for (id, entry) in records {
        let line = provisioning_record(&id, &entry);
        let again = parse_records(&line).expect("an exported record imports");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, id);
        assert_eq!(again[0].1.record.secret(), entry.record.secret());
        assert_eq!(again[0].1.record.step(), entry.record.step());
    }
}
