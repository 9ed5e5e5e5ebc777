//! authd: a self-hosted authentication server. The module tree; `app::App` builds the whole
//! program from `Settings` (the CLI and the tests both use it).

pub mod alloc;
pub mod app;
pub mod blocking;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod episode;
pub mod error;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod service;
pub mod store;
