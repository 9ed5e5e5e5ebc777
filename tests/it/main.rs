//! The one integration-test binary: every test drives the real server (in-process, on an
//! ephemeral loopback port, SQLite in a temp dir) over HTTP, or runs the built binary.

mod support;

mod admin_api;
mod admin_cli;
mod audit;
mod bench_smoke;
mod browser;
mod cli;
mod config;
mod faults;
mod flows;
mod hostile;
mod http_contract;
mod jwt_attacks;
mod limits;
mod logs;
mod openapi;
mod process;
mod props;
mod tokens;
