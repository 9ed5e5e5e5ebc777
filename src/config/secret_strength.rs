//! Configuration: how guessable a configured secret is. Two tests beyond length: is it a
//! secret published as an example (documentation defaults, tutorial values), and how many
//! bits it is rated at (`rated_bits`): zxcvbn's estimate where zxcvbn finds a pattern, the
//! bits of its alphabet where zxcvbn finds none.

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

/// The rating a configured secret must reach `SECRET_MIN_BITS` at, in bits.
///
/// zxcvbn prices every character it cannot explain at log2(10) = 3.3 bits, whatever the
/// alphabet: 32 random hex characters (128 bits) or 32 base64url characters (192 bits) come out
/// near 106. So zxcvbn is asked only whether it finds structure (words, names, dates, keyboard
/// walks, sequences, repeats), and the bits come from the alphabet when it finds none:
///
/// - structure: zxcvbn's estimate (`estimated_bits`) is below `share` of what it gives a string
///   of that length in which it finds nothing (`share` is 0.70 for decimal and hex digits, whose
///   digit runs zxcvbn reads as dates and numbers by chance, 0.87 for every other alphabet). Then
///   the rating is zxcvbn's estimate, as before.
/// - no structure: the rating is the bits of the secret as random output of the smallest usual
///   alphabet holding all its characters (`Alphabet::of`), counting only characters that do not
///   repeat an earlier run (`fresh_chars`): 4 bits per hex character, 6 per base64 character.
///
/// Only the first 100 characters count, as zxcvbn reads.
pub(super) fn rated_bits(secret: &str) -> f64 {
    let chars: Vec<char> = secret.chars().take(ZXCVBN_MAX_CHARS).collect();
    let alphabet = Alphabet::of(&chars);
    let zxcvbn_bits = estimated_bits(secret);
    let (unit, _) = periodic_unit(&chars);
    let unexplained = unit.len() as f64 * std::f64::consts::LOG2_10;
    if zxcvbn_bits < alphabet.share * unexplained {
        return zxcvbn_bits;
    }
    let per_char = alphabet.size.log2();
    fresh_chars(&chars, (CHANCE_REPEAT_BITS / per_char).ceil() as usize) as f64 * per_char
}

/// A repeated run shorter than this many bits of its alphabet is taken for chance (random
/// output of 100 characters holds one with a probability of about 10^-5 or less); a longer
/// one is a copy, and counts nothing.
const CHANCE_REPEAT_BITS: f64 = 28.0;

/// The alphabet a secret is printed in, as far as its characters show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Alphabet {
    /// How many characters it has.
    size: f64,
    /// The least share of zxcvbn's estimate for an unexplained string of the same length that
    /// random output of this alphabet reaches (see `rated_bits`).
    share: f64,
}

impl Alphabet {
    /// The smallest usual alphabet holding every character: decimal (10), hex in one case (16),
    /// hex with `-` (UUIDs, 17), one case of letters (26), one case with digits (36), letters
    /// (52), letters and digits (62), base64 or base64url with `=` padding (64), else printable
    /// ASCII (95; also for any other character, to stay low).
    fn of(chars: &[char]) -> Alphabet {
        let all = |f: &dyn Fn(char) -> bool| chars.iter().all(|&c| f(c));
        let hex_lower = |c: char| matches!(c, '0'..='9' | 'a'..='f');
        let hex_upper = |c: char| matches!(c, '0'..='9' | 'A'..='F');
        let (size, digits) = if all(&|c| c.is_ascii_digit()) {
            (10.0, true)
        } else if all(&hex_lower) || all(&hex_upper) {
            (16.0, true)
        } else if all(&|c| hex_lower(c) || c == '-') || all(&|c| hex_upper(c) || c == '-') {
            (17.0, true)
        } else if all(&|c| c.is_ascii_lowercase()) || all(&|c| c.is_ascii_uppercase()) {
            (26.0, false)
        } else if all(&|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            || all(&|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            (36.0, false)
        } else if all(&|c| c.is_ascii_alphabetic()) {
            (52.0, false)
        } else if all(&|c| c.is_ascii_alphanumeric()) {
            (62.0, false)
        } else if all(&|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
            || all(&|c| c.is_ascii_alphanumeric() || "-_=".contains(c))
        {
            (64.0, false)
        } else {
            (95.0, false)
        };
        Alphabet {
            size,
            share: if digits { 0.70 } else { 0.87 },
        }
    }
}

/// How many characters of `chars` are not part of a run of at least `min_copy` characters
/// that already appeared earlier (a copy, overlapping or not, as LZ77 finds them): a short
/// random string repeated, with or without separators, counts once.
fn fresh_chars(chars: &[char], min_copy: usize) -> usize {
    let (mut fresh, mut i) = (0, 0);
    while i < chars.len() {
        let longest = (0..i)
            .map(|start| {
                (0..chars.len() - i)
                    .take_while(|&k| chars[start + k] == chars[i + k])
                    .count()
            })
            .max()
            .unwrap_or(0);
        if longest >= min_copy.max(1) {
            i += longest;
        } else {
            fresh += 1;
            i += 1;
        }
    }
    fresh
}

/// zxcvbn's estimate, in bits (log2 of the guesses), of what it takes to guess `secret`.
///
/// zxcvbn's guess count saturates at 2^64, below the 128 bits a secret needs, so the secret
/// (its first 100 characters, as zxcvbn reads) is rated in 16-character pieces whose log10
/// guesses are summed; pieces are cut at two offsets and the lower total wins, so a word is
/// not hidden by a cut. A secret that repeats a shorter unit is rated as that unit plus the
/// count of repetitions, as zxcvbn's repeat matcher would.
fn estimated_bits(secret: &str) -> f64 {
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
