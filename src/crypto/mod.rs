//! Crypto layer: password hashing (bcrypt), access tokens (JWT), refresh tokens (HMAC-signed
//! random strings), and the keys behind them. Small functions; no business rules.

pub mod bcrypt;
pub mod jws_header;
pub mod jwt;
pub mod keys;
pub mod one_time;
pub mod password;
pub mod refresh;
pub mod totp;
