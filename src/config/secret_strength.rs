//! Configuration: how guessable a configured secret is. Two tests beyond length: is it a
//! secret published as an example (documentation defaults, tutorial values), and how many
//! guesses does zxcvbn estimate it needs.

use unicode_normalization::UnicodeNormalization;

/// Secrets published in documentation, `.env.example` files and tutorials, and copied from
/// there into real deployments often enough to be the first thing an attacker tries. Compared
/// after `normalize` and refused wherever they appear inside a configured secret, so copies with
/// other case, separators or a suffix are caught too.
const PUBLISHED: &[&str] = &[
    // Supabase: self-hosting .env.example (JWT_SECRET) and the CLI's local default; the other
    // secrets of the same .env.example.
    "super-secret-jwt-token-with-at-least-32-characters",
    "your-super-secret-and-long-postgres-password",
    "this_password_is_insecure_and_should_be_updated",
    "UpNVntn3cDxHJpq99YMc1T1AQgQpc8kfYTuRgBiYa15BLrx8etQoXz3gZv1/u2oq",
    "your-32-character-encryption-key",
    "your-encryption-key-32-chars-min",
    "your-super-secret-and-long-logflare-key",
    // jwt.io's debugger.
    "a-string-secret-at-least-256-bits-long",
    "your-256-bit-secret",
    "your-384-bit-secret",
    "your-512-bit-secret",
    // Hasura's JWT documentation and the starter kits built on it.
    "3EK6FD+o0+c7tzBNVfjpMkNDi2yARAAKzQlk8O2IKoxQu4nF7EdAh8s3TwpHwrdWT6R",
    // PostgREST's tutorial.
    "reallyreallyreallyreallyverysafe",
    // FastAPI's OAuth2 with JWT tutorial.
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
    // Spring Security JWT tutorials.
    "404E635266556A586E3272357538782F413F4428472B4B6250645367566B5970",
    "5367566B59703373367639792F423F4528482B4D6251655468576D5A71347437",
    "======================BezKoder=Spring===========================",
    // NestJS's authentication documentation.
    "DO NOT USE THIS VALUE. INSTEAD, CREATE A COMPLEX SECRET AND KEEP IT SAFE OUTSIDE OF THE SOURCE CODE.",
    // ASP.NET Core JWT tutorials.
    "this is my custom Secret key for authentication",
    // Directus and Auth.js examples.
    "replace-with-secure-random-value",
];

/// The form in which secrets are compared with `PUBLISHED`: NFKC, lower case, letters and
/// digits only.
fn normalize(secret: &str) -> String {
    secret
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// True when `secret` is, or contains, a published example secret.
pub(super) fn is_published(secret: &str) -> bool {
    let secret = normalize(secret);
    PUBLISHED
        .iter()
        .any(|example| secret.contains(&normalize(example)))
}

/// Words that make a secret easier to guess in authd's own context (zxcvbn's user inputs).
const CONTEXT: &[&str] = &[
    "authd", "jwt", "jws", "hs256", "eddsa", "secret", "token", "access", "refresh", "signing",
    "key", "supabase",
];

/// zxcvbn reads at most the first 100 characters of a password.
const ZXCVBN_MAX_CHARS: usize = 100;

/// A piece short enough that zxcvbn's guess count (a `u64`, saturating near 10^19.27) and its
/// factorial term stay exact: at most 10^16 guesses for 16 characters.
const PIECE: usize = 16;

/// zxcvbn's estimate, in bits (log2 of the guesses), of what it takes to guess `secret`.
///
/// zxcvbn's guess count saturates at 2^64, below the 128 bits a secret needs, so the secret
/// (its first 100 characters, as zxcvbn reads) is rated in 16-character pieces whose log10
/// guesses are summed; pieces are cut at two offsets and the lower total wins, so a word is
/// not hidden by a cut. A secret that repeats a shorter unit is rated as that unit plus the
/// count of repetitions, as zxcvbn's repeat matcher would.
pub(super) fn estimated_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().take(ZXCVBN_MAX_CHARS).collect();
    let (unit, repeats) = periodic_unit(&chars);
    let log10 = [0, PIECE / 2]
        .into_iter()
        .map(|offset| {
            let offset = offset.min(unit.len());
            rate(&unit[..offset]) + unit[offset..].chunks(PIECE).map(rate).sum::<f64>()
        })
        .fold(f64::INFINITY, f64::min)
        + (repeats as f64).log10();
    log10 / std::f64::consts::LOG10_2
}

/// zxcvbn's log10 guesses for a piece of at most `PIECE` characters (0 for none).
fn rate(piece: &[char]) -> f64 {
    if piece.is_empty() {
        return 0.0;
    }
    let text: String = piece.iter().collect();
    zxcvbn::zxcvbn(&text, CONTEXT).guesses_log10()
}

/// The shortest unit that `chars` repeats (the last repetition may be cut short), and how many
/// times it appears; `(chars, 1)` when it repeats nothing shorter than half of itself.
fn periodic_unit(chars: &[char]) -> (&[char], usize) {
    let n = chars.len();
    (1..=n / 2)
        .find(|&p| (p..n).all(|i| chars[i] == chars[i - p]))
        .map_or((chars, 1), |p| (&chars[..p], n.div_ceil(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_examples_are_found_in_any_spelling() {
        for secret in [
            "your-super-secret-jwt-token-with-at-least-32-characters-long",
            "super-secret-jwt-token-with-at-least-32-characters-long",
            "YOUR_SUPER_SECRET_JWT_TOKEN_WITH_AT_LEAST_32_CHARACTERS_LONG",
            "your super secret jwt token with at least 32 characters long!",
            "ｙｏｕｒ-ｓｕｐｅｒ-ｓｅｃｒｅｔ-ｊｗｔ-ｔｏｋｅｎ-ｗｉｔｈ-ａｔ-ｌｅａｓｔ-３２-ｃｈａｒａｃｔｅｒｓ",
            "a-string-secret-at-least-256-bits-long-change-this-please",
            "404e635266556a586e3272357538782f413f4428472b4b6250645367566b5970",
            "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        ] {
            assert!(is_published(secret), "{secret}");
        }
        assert!(!is_published("dN2y8QkV3u0XbJ5wTq7LmE1rZc9HsAf4PgK6oYi2"));
        for example in PUBLISHED {
            assert!(normalize(example).len() >= 14, "{example}");
        }
    }

    #[test]
    fn zxcvbn_ratings_of_known_shapes() {
        let bits = |s: &str| estimated_bits(s);
        // Random output of `openssl rand`: far above 128 bits.
        assert!(bits("grYplcLiO/Sd6Fo4gDN1gHcN/e7LyOQYQU1f1a3WcrcamumlvZFFwUJhZYhJSTJk") > 190.0);
        assert!(bits("b35ea1cde72ed64fb2aca197c0820429f9d1414318ff2c2be34f2f1f97638420") > 180.0);
        // Words, sequences, keyboard walks and repeats: below.
        for weak in [
            "thisisaverylongsecretkeyforjwttokensigning",
            "ThisIsMySecretKeyForJwtTokenThatIsLongEnough",
            "mysupersecretkeythatisverylongandsecure123",
            "correct-horse-battery-staple-correct-horse",
            "0123456789abcdef0123456789abcdef",
            "abcdefghijklmnopqrstuvwxyz0123456789",
            "qwertyuiopasdfghjklzxcvbnm1234567890",
            "authd-jwt-access-secret-for-production-2024",
            "Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!Xk9#mP2$vL8@nQ4!",
        ] {
            assert!(bits(weak) < 128.0, "{weak}: {}", bits(weak));
        }
    }

    #[test]
    fn periodic_units() {
        let chars: Vec<char> = "abcabcab".chars().collect();
        assert_eq!(periodic_unit(&chars), (&chars[..3], 3));
        let chars: Vec<char> = "abcdefgh".chars().collect();
        assert_eq!(periodic_unit(&chars), (&chars[..], 1));
        assert_eq!(periodic_unit(&[]), (&[][..], 1));
    }
}
