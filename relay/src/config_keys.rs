//! Config-file keys routed to the settings group that owns them.
//!
//! [`crate::cli::Settings`] is the relay's own settings plus one group per family
//! ([`crate::families::FamilySettings`]), each a `serde` struct of its own. serde's
//! `flatten` would merge them, but it buffers every value (the TOML error then loses the
//! position of the offending key) and does not support `deny_unknown_fields`. Instead
//! the config file's table is read key by key: each key is handed, with its value still
//! unread, to the group whose field list names it ([`one_entry`]), so a group's
//! derived `Deserialize` reads the value straight from the TOML deserializer and its
//! errors keep their position; a key no group names is refused with serde's own
//! "unknown field ..., expected one of ..." over every group's keys.
//!
//! I/O contract: pure.

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IntoDeserializer as _, MapAccess, Visitor};

/// The field names (aliases included, in declaration order) a derived `Deserialize`
/// passes to `deserialize_struct`; `deserialize` is that derived function.
pub fn struct_fields(
    deserialize: impl FnOnce(FieldNames<'_>) -> Result<(), de::value::Error>,
) -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = deserialize(FieldNames(&mut fields));
    fields
}

/// The field names of the struct `T` (see [`struct_fields`]).
pub fn fields_of<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct_fields(|d| T::deserialize(d).map(drop))
}

/// A deserializer that only records the field list it is asked for.
#[derive(Debug)]
pub struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

/// Deserializes a settings group from the single entry `key` of `map`, whose value is
/// read straight from `map` (so its errors keep their position in the file).
pub fn one_entry<'de, T, A>(
    key: String,
    map: &mut A,
    deserialize: impl FnOnce(OneEntry<'_, A>) -> Result<T, A::Error>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
{
    deserialize(OneEntry {
        key: Some(key),
        map,
    })
}

/// One key of a map whose value is still to be read: a deserializer of a one-entry map.
#[derive(Debug)]
pub struct OneEntry<'a, A> {
    key: Option<String>,
    map: &'a mut A,
}

impl<'de, A: MapAccess<'de>> Deserializer<'de> for OneEntry<'_, A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for OneEntry<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.map.next_value_seed(seed)
    }
}

/// Reads a key and checks that `known` names it; an unknown key is refused there (so the
/// error points at the key) with serde's message listing `all`.
#[derive(Clone, Copy)]
pub struct KnownKey<'a> {
    /// Whether some group owns the key.
    pub known: &'a dyn Fn(&str) -> bool,
    /// Every key, for the message.
    pub all: &'static [&'static str],
}

impl std::fmt::Debug for KnownKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownKey").field("all", &self.all).finish()
    }
}

impl<'de> DeserializeSeed<'de> for KnownKey<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        let key = <String as serde::Deserialize>::deserialize(deserializer)?;
        if (self.known)(&key) {
            Ok(key)
        } else {
            Err(de::Error::unknown_field(&key, self.all))
        }
    }
}

/// `or` for a settings group: field by field, the value from `self` if given, else the
/// one from `fallback` (flags over environment over config file).
macro_rules! impl_settings_or {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $ty {
            /// Field by field: the value from `self` if given, else the one from `fallback`.
            pub fn or(self, fallback: Self) -> Self {
                Self {
                    $($field: self.$field.or(fallback.$field),)*
                }
            }
        }
    };
}
pub(crate) use impl_settings_or;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
    struct Group {
        a_b: Option<u32>,
        #[serde(alias = "z")]
        c: Option<String>,
    }

    #[test]
    fn field_names_include_aliases_in_order() {
        assert_eq!(fields_of::<Group>(), ["a-b", "c", "z"]);
    }

    #[test]
    fn one_entry_reads_only_its_key_and_keeps_value_errors() {
        #[derive(Debug)]
        struct Both(Group);
        impl<'de> serde::Deserialize<'de> for Both {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Both;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a table")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Both, A::Error> {
                        let mut g = Group::default();
                        let known = |k: &str| fields_of::<Group>().contains(&k);
                        let seed = KnownKey {
                            known: &known,
                            all: fields_of::<Group>(),
                        };
                        while let Some(key) = map.next_key_seed(seed)? {
                            let one = one_entry(key, &mut map, |e| {
                                <Group as serde::Deserialize>::deserialize(e)
                            })?;
                            g = Group {
                                a_b: one.a_b.or(g.a_b),
                                c: one.c.or(g.c),
                            };
                        }
                        Ok(Both(g))
                    }
                }
                d.deserialize_map(V)
            }
        }
        let b: Both = toml::from_str("a-b = 3\nz = \"x\"\n").unwrap();
        assert_eq!(
            b.0,
            Group {
                a_b: Some(3),
                c: Some("x".into())
            }
        );
        let e = toml::from_str::<Both>("a-b = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1, column 7"), "{e}");
        let e = toml::from_str::<Both>("c = \"x\"\nq = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column 1"), "{e}");
        assert!(
            e.contains("unknown field `q`, expected one of `a-b`, `c`, `z`"),
            "{e}"
        );
    }
}
