//! CONNECT targets and UUID spellings: never panics; an accepted id is exactly the
//! canonical spelling of its bytes (up to letter case) and owner placement stays in range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tryst_engine::target::{
    ConnectTarget, RendezvousId, RendezvousKey, TargetError, parse_connect_target,
};

fuzz_target!(|data: &[u8]| {
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
        Ok(_) => {}
        Err(TargetError::UnknownScheme) => assert!(!text.starts_with("uuid:")),
        Err(_) => assert!(text.starts_with("uuid:")),
    }
    if let Ok(id) = RendezvousId::parse(text) {
        assert_eq!(text.len(), 36);
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
        let key = RendezvousKey::from(id);
        let workers = usize::from(data[0]) + 1;
        assert!(key.owner(workers) < workers);
        assert_eq!(key.owner(workers), key.owner(workers));
    }
});
