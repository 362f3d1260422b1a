//! The Qredo tag KDF (protocols.md §4.4): the tag itself never reaches the relay, only
//! its `hashedTag`.
//!
//! ```text
//! master    = PBKDF2-HMAC-SHA256(password = UTF-8(appId ‖ tag),
//!                                salt = "8YhZWIxieGYyW07D", iterations = 10000, dkLen = 32)
//! hashedTag = HKDF-SHA256(ikm = master, salt = "tAMJb4bJd60ufzHS", info = "", L = 32)
//! ownership = Ed25519 keypair whose 32-byte seed is hashedTag (as the Qredo SDK does)
//! ```
//!
//! The derived ownership key is public knowledge for anyone who has seen `hashedTag` on
//! the wire; see `docs/compat/qredo.md` ("Security notes").

pub use tryst_client::tag::{
    HASHED_TAG_SALT, HashedTag, MASTER_ITERATIONS, MASTER_SALT, hashed_tag, master_key,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// (appId, tag, master hex, hashedTag hex, derived public key hex). Computed once,
    /// independently, with python3: `hashlib.pbkdf2_hmac("sha256", (app + tag).encode(),
    /// b"8YhZWIxieGYyW07D", 10000, 32)`, a hand-written HKDF over `hmac` (extract with
    /// salt "tAMJb4bJd60ufzHS", one expand block with empty info), and the public key
    /// from `cryptography`'s `Ed25519PrivateKey.from_private_bytes(hashedTag)`.
    pub(crate) const VECTORS: [(&str, &str, &str, &str, &str); 4] = [
        (
            "",
            "hello",
            "ee4952633c64285b3fddeedc0645f7b6bd4429476a66f08fecf22fc745669322",
            "b361493fec41a15b1debb72c3012259bfe40f02420a1a570a70faf6ab8c6e3a7",
            "85e8895fd5b4a5f2f44cabec0b7bf0d91bbb9f83a394c9cb0ab674ca08a2eb35",
        ),
        (
            "com.example.chat",
            "a1b2c3d4e5f60718",
            "254c3f404a5078b975bb533a8080462a92128deea7a4dc3c8fc547cd7e4032f0",
            "7e86d28fc7b3ad46b71ab964a45d4dc21e3d01101daf3837a2ea693b409bc8f2",
            "9631466c7862650d8fcef44f29a121f56b5ca7f8e0950da4e1f902d7405bf98d",
        ),
        (
            "",
            "caf\u{e9} \u{2615} \u{65e5}\u{672c}",
            "2fe546de102baf3219880d2ef1cdb270d8780cd07a1ef3052bc34003ad483ae0",
            "67f32dd318c911785216bf5b5dc3ea841e87561c5d8828c7a4c1ed2e4af5bdca",
            "1ad270782cd2d2ddde327dbc2c4c484847cb0441a4fd2c022404a40dd65756dd",
        ),
        (
            "",
            "",
            "e102929a94ca32a7b00da7c971c113b2c988d5994277b59f68f8150559f755e6",
            "56979b12711b9844ad03722d77a1f22c5958db5b46ec9cd36251f193e64acdb0",
            "",
        ),
    ];

    #[test]
    fn vectors_match_an_independent_computation() {
        for (app, tag, master, hashed, public) in VECTORS {
            assert_eq!(hex::encode(master_key(app, tag)), master, "{app:?} {tag:?}");
            let h = hashed_tag(app, tag);
            assert_eq!(h.to_hex(), hashed, "{app:?} {tag:?}");
            assert_eq!(h.target(), format!("tag:{hashed}"));
            if !public.is_empty() {
                assert_eq!(hex::encode(h.derived_public_key().as_bytes()), public);
            }
        }
    }

    #[test]
    fn app_id_is_a_plain_prefix() {
        // appId ‖ tag is concatenated without a separator (as the SDK does).
        assert_eq!(hashed_tag("ab", "c"), hashed_tag("a", "bc"));
        assert_ne!(hashed_tag("", "hello"), hashed_tag("x", "hello"));
    }
}
