//! Configuration section `[password]`: how passwords are hashed and how long they must be.

use super::reader::Reader;

/// The keys of `[password]`.
pub(super) const KEYS: &[&str] = &["bcrypt_cost", "min_length"];

#[derive(Debug, Clone)]
pub struct PasswordSettings {
    pub bcrypt_cost: u32,
    pub min_length: usize,
}

impl PasswordSettings {
    pub(super) fn read(r: &mut Reader) -> Self {
        PasswordSettings {
            bcrypt_cost: r.uint("password.bcrypt_cost", 10, 31) as u32,
            min_length: r.uint("password.min_length", 1, 72) as usize,
        }
    }

    pub(super) fn to_toml(&self) -> String {
        format!(
            "[password]\nbcrypt_cost = {}\nmin_length = {}\n",
            self.bcrypt_cost, self.min_length,
        )
    }
}
