//! Outgoing mail, below the service (CONTRACT 10.1): the text of each kind of mail
//! (`message`) and the transports that carry it (`transport`: SMTP through `lettre` over
//! rustls, a directory of `.eml` files, or none). The decisions (what to send, when to retry,
//! which token to mint) are `service::mail`'s; this module only renders and delivers.

pub mod message;
pub mod transport;

pub use message::{Link, Rendered};
pub use transport::{probe, Delivery, Transport};
