//! `GET /api/admin/users?cursor=` as docs/API.md promises: a cursor is a position, not a
//! credential. Anything but the exact form the server writes is 400 `VALIDATION_ERROR` on
//! `cursor`; any well-formed position is answered with the users after it, whoever wrote it,
//! also after that user is deleted and after a restart.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD as B64};
use base64::Engine;
use serde_json::Value;

use crate::admin_cli::admin_token;
use crate::support::*;

fn page(s: &TestServer, admin: &str, query: &str) -> Resp {
    send(
        s.get(&format!("/api/admin/users?{query}"))
            .bearer_auth(admin),
    )
}

fn ids(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

fn next_cursor(r: &Resp) -> String {
    r.body["data"]["nextCursor"].as_str().unwrap().to_string()
}

/// A query-string value, percent-encoded.
fn q(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn malformed_cursors_are_refused_and_well_formed_ones_are_positions() {
    let s = TestServer::start();
    let (_, admin) = admin_token(&s);
    for i in 0..4 {
        s.register(&unique_email(&format!("cursor{i}")));
    }
    let everyone = ids(&page(&s, &admin, "limit=200"));
    assert_eq!(everyone.len(), 5);
    let first = page(&s, &admin, "limit=2");
    assert_eq!(ids(&first), everyone[..2]);
    let cursor = next_cursor(&first);
    let after = ids(&page(&s, &admin, &format!("limit=2&cursor={}", q(&cursor))));
    assert_eq!(after, everyone[2..4]);

    // What a cursor holds: `<createdAt ms>:<id>`, base64url without padding.
    let text = String::from_utf8(B64.decode(&cursor).unwrap()).unwrap();
    let (at, id) = text.split_once(':').unwrap();
    assert_eq!(id, everyone[1]);

    // Malformed: 400 on `cursor`, never a page.
    let id_upper = id.to_uppercase();
    let malformed = [
        "garbage".to_string(),
        "!!!".into(),
        "\u{0}\u{1}".into(),
        format!(" {cursor}"),
        format!("{cursor} "),
        format!("{cursor}\n"),
        URL_SAFE.encode(&text),
        B64.encode(id),
        B64.encode(format!("{at}:")),
        B64.encode(format!("x:{id}")),
        B64.encode(format!("{at}:{id}:")),
        B64.encode(format!("+{at}:{id}")),
        B64.encode(format!("0{at}:{id}")),
        B64.encode(format!("-1:{id}")),
        B64.encode(format!("{at}:{id_upper}")),
        B64.encode(format!("{at}:urn:uuid:{id}")),
        B64.encode(format!("{at}:{{{id}}}")),
        B64.encode(format!("{at}:{}", id.replace('-', ""))),
    ];
    for bad in &malformed {
        let r = page(&s, &admin, &format!("cursor={}", q(bad)));
        r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(detail_fields(&r), ["cursor"], "{bad:?}: {}", r.text);
    }

    // Well-formed positions the server never wrote are positions all the same.
    let origin = B64.encode("0:00000000-0000-0000-0000-000000000000");
    assert_eq!(
        ids(&page(&s, &admin, &format!("cursor={origin}"))),
        everyone
    );
    let end = B64.encode("99999999999999:ffffffff-ffff-ffff-ffff-ffffffffffff");
    let r = page(&s, &admin, &format!("cursor={end}"));
    assert_eq!(ids(&r), Vec::<String>::new());
    assert_eq!(r.body["data"]["nextCursor"], Value::Null);

    // A cursor outlives the user it points after, and the process that wrote it.
    let r = send(
        s.delete(&format!("/api/admin/users/{id}"))
            .bearer_auth(&admin),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let query = format!("limit=2&cursor={}", q(&cursor));
    assert_eq!(ids(&page(&s, &admin, &query)), after);
    let s = TestServer::in_dir(s.stop(), &[]);
    assert_eq!(ids(&page(&s, &admin, &query)), after);
}
