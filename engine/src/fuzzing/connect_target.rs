//! `connect_target`: CONNECT targets and UUID spellings. Never panics; an accepted id is
//! exactly the canonical spelling of its bytes (up to letter case) and owner placement
//! stays in range.

use crate::target::{
    ConnectTarget, Placement, RendezvousId, RendezvousKey, TargetError, parse_connect_target,
};

/// Runs one input (non-UTF-8 inputs are ignored: targets arrive as `&str`).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_connect_target(text) {
        Ok(ConnectTarget::Uuid(id)) => {
            let rest = &text["uuid:".len()..];
            assert_eq!(id.to_string(), rest.to_ascii_lowercase());
            assert_eq!(RendezvousId::parse(&id.to_string()), Ok(id));
            assert_eq!(RendezvousId::parse(&rest.to_ascii_uppercase()), Ok(id));
        }
        Err(TargetError::UnknownScheme) => assert!(!text.starts_with("uuid:")),
        Err(_) => assert!(text.starts_with("uuid:")),
    }
    if let Ok(id) = RendezvousId::parse(text) {
        assert_eq!(text.len(), 36);
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
        let key = RendezvousKey::from(id);
        let workers = usize::from(data[0]) + 1;
        let mut hash_key = [0u8; 16];
        hash_key.copy_from_slice(&data[..16]);
        let placement = Placement::new(workers, hash_key);
        assert!(key.owner(&placement) < workers);
        assert_eq!(key.owner(&placement), key.owner(&placement));
        assert_eq!(
            key.owner(&Placement::new(workers, placement.key())),
            key.owner(&placement)
        );
    }
}
