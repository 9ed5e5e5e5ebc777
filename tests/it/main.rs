//! The one integration-test binary: every test drives the real server (in-process, on an
//! ephemeral loopback port, SQLite in a temp dir) over HTTP, or runs the built binary.

mod proxy;
mod services;
mod support;

mod admin_api;
mod admin_cli;
mod admin_cursors;
mod audit;
mod bench_smoke;
mod browser;
mod change_password;
mod cleanup;
mod cli;
mod client_ip;
mod config;
mod docs_reference;
mod edge;
mod faults;
mod flows;
mod hostile;
mod http_contract;
mod import_users;
mod jws_header;
mod jwt_attacks;
mod keys;
mod keys_upgrade;
mod last_admin;
mod limits;
mod limits_race;
mod log_floods;
mod logs;
mod migrate_data;
mod multi_instance;
mod openapi;
mod operator_config;
mod password_chars;
mod postgres_backend;
mod process;
mod props;
mod redis_budget;
mod secrets;
mod slow_clients;
mod store_conformance;
mod terminal;
mod tokens;
