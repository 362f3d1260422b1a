//! Integration tests of the `tryst` binary (one test binary; topics are modules).

mod agents;
mod alerts;
mod cli;
mod cluster;
mod cluster_claims;
mod cluster_http;
mod cluster_replay;
mod deaddrop;
mod hardening;
mod hive;
mod hive_stream;
mod id_listen;
mod node;
mod pico;
mod qredo;
mod relay;
mod serve;
mod stun;
mod tag;
mod tls;
mod tunnel;
