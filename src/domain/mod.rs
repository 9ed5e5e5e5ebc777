//! Domain layer: entities, newtypes and pure validation shared by every other layer.

pub mod admins;
pub mod audit_chain;
pub mod email_change;
pub mod entities;
pub mod ip;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod mfa;
pub mod one_time;
pub mod passkeys;
pub mod revocation_feed;
pub mod self_service;
pub mod terminal;
pub mod time;
pub mod validate;
pub mod views;

pub use entities::*;
