//! docs/protocol.md §1 and §2, authentication and membership: every unauthenticated case
//! is upgraded and then closed with 4001, non-members with 4003; valid
//! simplejwt access tokens (numeric or string `user_id`) connect.
//!
//! Every scenario runs on SQLite (both io drivers) and on Postgres, both on a
//! database chatgate migrated and on Django's own DDL (`on_every_store!`).

#[macro_use]
mod support;

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;

on_every_store!(
    lib_minted_token_connects,
    no_token_closes_4001,
    garbage_token_closes_4001,
    bad_signature_closes_4001,
    other_algorithm_closes_4001,
    alg_none_closes_4001,
    expired_token_closes_4001,
    leeway_applies_to_exp,
    refresh_token_closes_4001,
    missing_claims_close_4001,
    unknown_user_closes_4001,
    inactive_user_closes_4001,
    string_user_id_connects,
    non_numeric_user_id_closes_4001,
    configured_claim_names_are_used,
    token_without_jti_closes_4001,
    renamed_jti_claim_is_required,
    jti_check_turned_off_accepts_tokens_without_one,
    not_a_participant_closes_4003,
    missing_conversation_closes_4003,
);

/// The claims simplejwt puts in an access token.
fn access_claims(user_id: Value) -> Value {
    let now = now_secs();
    json!({
        "token_type": "access",
        "exp": now + 600,
        "iat": now,
        "jti": "5f0c3e6a2b8d4e0f9a1b2c3d4e5f6a7b",
        "user_id": user_id,
    })
}

fn sign(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).expect("encode JWT")
}

/// HS256 with the gateway's secret.
fn token(claims: &Value) -> String {
    sign(Algorithm::HS256, SECRET.as_bytes(), claims)
}

/// alice in a conversation with bob; returns (gateway, alice, conversation).
fn setup(on: Target) -> (TestGateway, User, i64) {
    let (gw, alice, _, conv) = setup_pair(on);
    (gw, alice, conv)
}

fn setup_pair(on: Target) -> (TestGateway, User, User, i64) {
    let gw = TestGateway::on_target(on);
    let alice = gw.user("alice");
    let bob = gw.user("bob");
    let conv = gw.conversation(&[&alice, &bob]);
    (gw, alice, bob, conv)
}

fn with_token(conv: i64, token: &str) -> String {
    format!("/ws/chat/{conv}/?token={token}")
}

fn lib_minted_token_connects(on: Target) {
    let (gw, alice, conv) = setup(on);
    gw.connect(conv, &alice);
    // A token we sign ourselves with simplejwt's claims works the same.
    gw.connect_path(
        &with_token(conv, &token(&access_claims(json!(alice.id)))),
        &[],
    );
}

fn no_token_closes_4001(on: Target) {
    let (gw, _, conv) = setup(on);
    gw.expect_rejected(&format!("/ws/chat/{conv}/"), &[], 4001);
    gw.expect_rejected(&format!("/ws/chat/{conv}/?token="), &[], 4001);
    gw.expect_rejected(&format!("/ws/chat/{conv}/?other=1"), &[], 4001);
    gw.expect_rejected(
        &format!("/ws/chat/{conv}/"),
        &[("Authorization", "Bearer ")],
        4001,
    );
}

fn garbage_token_closes_4001(on: Target) {
    let (gw, _, conv) = setup(on);
    for t in ["abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9"] {
        gw.expect_rejected(&with_token(conv, t), &[], 4001);
    }
}

fn bad_signature_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    let t = sign(
        Algorithm::HS256,
        b"some other secret",
        &access_claims(json!(alice.id)),
    );
    gw.expect_rejected(&with_token(conv, &t), &[], 4001);
    // A valid token with its signature's last characters altered.
    let mut t = alice.token.clone();
    let last = t.pop().unwrap();
    t.push(if last == 'A' { 'B' } else { 'A' });
    t.push_str("AA");
    gw.expect_rejected(&with_token(conv, &t), &[], 4001);
}

fn other_algorithm_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    for alg in [Algorithm::HS512, Algorithm::HS384] {
        let t = sign(alg, SECRET.as_bytes(), &access_claims(json!(alice.id)));
        gw.expect_rejected(&with_token(conv, &t), &[], 4001);
    }
}

fn alg_none_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    let claims = b64url(access_claims(json!(alice.id)).to_string().as_bytes());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
    ] {
        let t = format!("{}.{claims}.", b64url(header.as_bytes()));
        gw.expect_rejected(&with_token(conv, &t), &[], 4001);
    }
    // `none` carrying a real HS256 signature of the same input is still refused.
    let valid = token(&access_claims(json!(alice.id)));
    let sig = valid.rsplit('.').next().unwrap();
    let t = format!(
        "{}.{claims}.{sig}",
        b64url(br#"{"alg":"none","typ":"JWT"}"#)
    );
    gw.expect_rejected(&with_token(conv, &t), &[], 4001);
}

fn expired_token_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    let mut c = access_claims(json!(alice.id));
    c["exp"] = json!(now_secs() - 3600);
    gw.expect_rejected(&with_token(conv, &token(&c)), &[], 4001);
    c["exp"] = json!(now_secs() - 5);
    gw.expect_rejected(&with_token(conv, &token(&c)), &[], 4001);
}

fn leeway_applies_to_exp(on: Target) {
    let gw = TestGateway::start_on(on, |c| {
        c.jwt.leeway = Duration::from_secs(60);
    });
    let alice = gw.user("alice");
    let conv = gw.conversation(&[&alice]);
    let mut c = access_claims(json!(alice.id));
    c["exp"] = json!(now_secs() - 20);
    gw.connect_path(&with_token(conv, &token(&c)), &[]);
    c["exp"] = json!(now_secs() - 600);
    gw.expect_rejected(&with_token(conv, &token(&c)), &[], 4001);
}

fn refresh_token_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    for tt in [
        json!("refresh"),
        json!("sliding"),
        json!("Access"),
        json!(null),
        json!(1),
    ] {
        let mut c = access_claims(json!(alice.id));
        c["token_type"] = tt.clone();
        gw.expect_rejected(&with_token(conv, &token(&c)), &[], 4001);
    }
}

fn missing_claims_close_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    for claim in ["user_id", "token_type", "exp"] {
        let mut c = access_claims(json!(alice.id));
        c.as_object_mut().unwrap().remove(claim);
        let t = token(&c);
        let mut client = gw.open(&with_token(conv, &t), &[]);
        // Identify which claim failed if it does.
        match client.next_message() {
            tungstenite::Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4001, "without {claim}")
            }
            other => panic!("token without {claim}: expected close 4001, got {other:?}"),
        }
    }
}

fn unknown_user_closes_4001(on: Target) {
    let (gw, _, conv) = setup(on);
    gw.expect_rejected(&with_token(conv, &gw.token_for(999_999)), &[], 4001);
}

fn inactive_user_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    gw.set_user_active(alice.id, false);
    gw.expect_rejected(&with_token(conv, &alice.token), &[], 4001);
    gw.set_user_active(alice.id, true);
    gw.connect(conv, &alice);
}

fn string_user_id_connects(on: Target) {
    let (gw, alice, bob, conv) = setup_pair(on);
    let t = token(&access_claims(json!(alice.id.to_string())));
    let mut a = gw.connect_path(&with_token(conv, &t), &[]);
    let mut b = gw.connect(conv, &bob);
    a.chat("string id");
    assert_new_message(&b.recv_new_message(), &alice, "string id");
}

fn non_numeric_user_id_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    for uid in [
        json!("abc"),
        json!(""),
        json!("1e3"),
        json!(null),
        json!([alice.id]),
    ] {
        gw.expect_rejected(&with_token(conv, &token(&access_claims(uid))), &[], 4001);
    }
}

fn configured_claim_names_are_used(on: Target) {
    let gw = TestGateway::start_on(on, |c| {
        c.jwt.user_id_claim = "uid".into();
        c.jwt.token_type_claim = "kind".into();
    });
    let alice = gw.user("alice");
    let conv = gw.conversation(&[&alice]);
    let now = now_secs();
    let custom =
        json!({"kind": "access", "uid": alice.id, "exp": now + 600, "iat": now, "jti": "x"});
    gw.connect_path(&with_token(conv, &token(&custom)), &[]);
    // The default names no longer count.
    gw.expect_rejected(
        &with_token(conv, &token(&access_claims(json!(alice.id)))),
        &[],
        4001,
    );
    // The lib's own minting follows the config.
    gw.connect(conv, &alice);
}

/// simplejwt refuses an access token without an id ("Token has no id").
fn token_without_jti_closes_4001(on: Target) {
    let (gw, alice, conv) = setup(on);
    let mut claims = access_claims(json!(alice.id));
    claims.as_object_mut().unwrap().remove("jti");
    let t = token(&claims);
    gw.expect_rejected(&with_token(conv, &t), &[], 4001);
    let bearer = format!("Bearer {t}");
    gw.expect_rejected(
        &format!("/ws/chat/{conv}/"),
        &[("Authorization", bearer.as_str())],
        4001,
    );
}

/// `--jwt-jti-claim` names the id claim, as simplejwt's `JTI_CLAIM`.
fn renamed_jti_claim_is_required(on: Target) {
    let gw = TestGateway::start_on(on, |c| c.jwt.jti_claim = Some("token_id".into()));
    let alice = gw.user("alice");
    let conv = gw.conversation(&[&alice]);
    let mut claims = access_claims(json!(alice.id));
    claims["token_id"] = json!("b1");
    gw.connect_path(&with_token(conv, &token(&claims)), &[]);
    // `jti` alone no longer counts.
    gw.expect_rejected(
        &with_token(conv, &token(&access_claims(json!(alice.id)))),
        &[],
        4001,
    );
    // The lib's own minting follows the config.
    gw.connect(conv, &alice);
}

/// An empty `--jwt-jti-claim` turns the check off (`JTI_CLAIM = None`).
fn jti_check_turned_off_accepts_tokens_without_one(on: Target) {
    let gw = TestGateway::start_on(on, |c| c.jwt.jti_claim = None);
    let alice = gw.user("alice");
    let conv = gw.conversation(&[&alice]);
    let mut claims = access_claims(json!(alice.id));
    claims.as_object_mut().unwrap().remove("jti");
    gw.connect_path(&with_token(conv, &token(&claims)), &[]);
}

fn not_a_participant_closes_4003(on: Target) {
    let (gw, _, conv) = setup(on);
    let mallory = gw.user("mallory");
    gw.expect_rejected(&with_token(conv, &mallory.token), &[], 4003);
    // Added as a participant, the same token connects.
    gw.add_participant(conv, mallory.id);
    gw.connect(conv, &mallory);
}

fn missing_conversation_closes_4003(on: Target) {
    let (gw, alice, conv) = setup(on);
    gw.expect_rejected(&with_token(conv + 1000, &alice.token), &[], 4003);
    gw.delete_conversation(conv);
    gw.expect_rejected(&with_token(conv, &alice.token), &[], 4003);
}
