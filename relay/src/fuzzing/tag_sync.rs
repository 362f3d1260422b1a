//! The messages that share Qredo's `/services` tag table with the workers' `tag:`
//! tables (`tag::sync`), on arbitrary bytes. The input is a sequence of chunks, each a
//! length byte and that many bytes (the last one may be short); every chunk is parsed as
//! a control message and as a report, and applied in order to one small tag table (the
//! clock moving one second per chunk), as a worker applies what the supervisor sends.
//! Never panics; whatever parses re-encodes to exactly its bytes (one spelling per
//! message); the table stays within its cap; every reply the family produces is a
//! report that parses, answering the id it was asked with.

use crate::qredo::share::TagLink;
use crate::tag::TagFamily;
use crate::tag::sync::{Control, Report};
use crate::tag::table::{TagLimits, room_key};
use tryst_engine::route::Router;

/// The fixed clock of the harness.
const NOW: u64 = 1_700_000_000;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut family = TagFamily::new(TagLimits {
        max_tags: 4,
        replay_capacity: 16,
        ..TagLimits::default()
    });
    let (link, _rx) = TagLink::new();
    let mut rest = data;
    let mut now = NOW;
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        now += 1;
        if let Ok(report) = Report::decode(chunk) {
            assert_eq!(report.encode(), chunk);
        }
        // The supervisor's side never panics on a report either.
        let _ = link.on_report(chunk);
        let control = Control::decode(chunk);
        if let Ok(c) = control {
            assert_eq!(c.encode(), chunk);
        }
        let mut evict = Vec::new();
        family.control(chunk, now, &mut evict);
        let mut reports = Vec::new();
        family.reports(&mut reports);
        assert!(family.table().len() <= 4, "the cap holds");
        match control {
            Ok(Control::Create { id, shared }) => {
                assert_eq!(reports.len(), 1);
                let Ok(Report::Reply { id: answered, .. }) = Report::decode(&reports[0]) else {
                    panic!("not a reply");
                };
                assert_eq!(answered, id);
                assert!(evict.iter().all(|k| *k == room_key(&shared.tag)));
            }
            Ok(Control::Claim { id, .. }) => {
                assert_eq!(reports.len(), 1);
                assert!(matches!(
                    Report::decode(&reports[0]),
                    Ok(Report::Reply { id: answered, .. }) if answered == id
                ));
                assert!(evict.is_empty());
            }
            Ok(Control::Put { id, shared }) => {
                if id == 0 {
                    assert!(reports.is_empty());
                } else {
                    assert_eq!(reports.len(), 1);
                    assert!(matches!(
                        Report::decode(&reports[0]),
                        Ok(Report::Reply { id: answered, .. }) if answered == id
                    ));
                }
                assert!(evict.iter().all(|k| *k == room_key(&shared.tag)));
            }
            Err(_) => {
                assert!(reports.is_empty() && evict.is_empty());
            }
        }
    }
}
