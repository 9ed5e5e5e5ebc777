//! The one integration-test binary: every test drives the real server (in-process, on an
//! ephemeral loopback port, SQLite in a temp dir) over HTTP, or runs the built binary.

mod support;

mod audit;
mod bench_smoke;
mod browser;
mod change_password;
mod cli;
mod config;
mod faults;
mod flows;
mod hostile;
mod http_contract;
mod import_users;
mod jwt_attacks;
mod limits;
mod logs;
mod openapi;
mod process;
mod props;
mod tokens;
