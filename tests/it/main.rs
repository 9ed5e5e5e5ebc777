//! The one integration-test binary: every test drives the real server (in-process, on an
//! ephemeral loopback port, SQLite in a temp dir) over HTTP, or runs the built binary.

mod support;

mod browser;
mod flows;
mod hostile;
mod http_contract;
mod jwt_attacks;
mod tokens;
