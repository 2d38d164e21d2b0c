//! Signature vectors, canonical bytes, verification negatives and key loading
//! (`../shared/test-vectors.md`; issue 2 acceptance 1–4).

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use starpay_batch::domain::{Centavos, MchId, MsgId, TrxState};
use starpay_batch::starpay::client::verify_notification;
use starpay_batch::starpay::codes::Code;
use starpay_batch::starpay::model::*;
use starpay_batch::starpay::sign::{
    self, canonical_bytes, envelope_bytes, known, verify_envelope, KeyError, Member, PrivateKey,
    PublicKey, SignedRequest, VerifiedForm, VerifyError,
};

const A_TBS: &str = r#"{"msgId":"161415460871","mchId":"105510000001","acctNo":"Recipient acctNo","acctName":"Recipient account name xx","acctMiddleName":"Recipient first name","acctLastName":"Recipient last name","receivingBank":"Sun Savings Bank, Inc.","trxAmount":"1000","currency":"PHP","service":"pay.starpay.instapay.disburse","attach":"Disbursement"}"#;
const A_SHA: &str = "e78b323b31c6066c5b070d07c41054e2dd86142d35bcf9927c8cfc4e6cd39334";
const A_SIG: &str = "Qyf5XV5qyt7CKkgM3iT4QVBqzIPYoQ4KxRzG5w6zRoABb7UfW4pOErgr9jQn9waD2/LqLPEdTrPxWj8ouiAitPPtm3zN1gXz9tBd281Zw9ULihtZb5Yov/O91aNVVT1ZO77YAfMscW71deJCCMCiiM9XDAUlfyswrDl5r0n0C3pwV2SVzHj3iJeXQBe1K7RAgqCO0I5dSXQ4s4pkjPFf1Mi8P9LLvN59t9t947GPVkUDtnlD/HT3dl15Wq0ffWUwkQoDHGHlzT0Oawm7Rx93qPPwMEtuF63pAmKX910N6fuP5bm0/SeGlNJ6ibjarZ8QwNttLTZi/0SZ3ZWxBCFCpQ==";
const B_TBS: &str = r#"{"acctLastName":"Recipient last name","acctMiddleName":"Recipient first name","acctName":"Recipient account name xx","acctNo":"Recipient acctNo","attach":"Disbursement","currency":"PHP","mchId":"105510000001","msgId":"161415460871","receivingBank":"Sun Savings Bank, Inc.","service":"pay.starpay.instapay.disburse","trxAmount":"1000"}"#;
const B_SHA: &str = "441f454b285a807b56d62a9eab54447ea923366d5d24bd54b00638522bb99435";
const B_SIG: &str = "kDwRKA3Z2Vhb+RpPeFOJkLb95MGhK76lSZ4dcLyAcntN93oCoyVxbeSnPX4g8M86xZZ5ubhTTBzsKcyJsAPOlj1bmOOLwy32xwBupbMoCgWtDMl0GtOWVr0xgytFSqnPhAboO4Ftj2JZ7aBVZjSkAiwmkBEFrxHJ+TfNsSXl3fOH6SDIXuAHcMhgouK+SniO7SIkOrT1H4ZAoIYcyTqrzanj4dtMfd1JSugZe1FGrAEb1cumk5sanN/4Qfz+1gc/xHWWMKPAoQjM37scwo/gMqe+0ZZx7mg9K/ALfbKNvVpX38Wy6kCzxiMFYL634trs1bZrEjR0d0kNBbdXOFzc6A==";
const C_TBS: &str = r#"{"msgId": "161415460871", "mchId": "105510000001", "acctNo": "Recipient acctNo", "acctName": "Recipient account name xx", "acctMiddleName": "Recipient first name", "acctLastName": "Recipient last name", "receivingBank": "Sun Savings Bank, Inc.", "trxAmount": "1000", "currency": "PHP", "service": "pay.starpay.instapay.disburse", "attach": "Disbursement"}"#;
const C_SHA: &str = "cf163e878a94f24dcd2281de9fe50908aabdfbfc62e0d2126e0bd6945e6f4b8c";
const C_SIG: &str = "iq7CSEjAoHtRvyqAM0z889j4KsYr+ztIZWaieuLSNjc0Ok/zN5WpxPgM159kp7OnAWaqH3ApvFMfxsUg6HTugf6gmKYjlRGjQw+dwHxb8S9ihRCefJMzdiv0nIstXbsuEtoS2+4ZFuBbfaX68aG61r0yaMSiIjOAlQ8CJ0ZJrNxgJfH8X03btu69zoGKHaDSvFotp6yzvNZ6HoEmE5JuPUJVbYVUVkxFXl1EwIWogYEOAcPeWBRKOCGJgnTFJ1Mq2Esk03SQVLh63qkg/sFo2CRd9R7oQoga+kGRIllC4mZKVS7pN4YTZh9yGKnjmD3U0CHsnOim/Yd9SVQQ/DeGYw==";
const B_WIRE: &str = r#"{"request":{"acctLastName":"Recipient last name","acctMiddleName":"Recipient first name","acctName":"Recipient account name xx","acctNo":"Recipient acctNo","attach":"Disbursement","currency":"PHP","mchId":"105510000001","msgId":"161415460871","receivingBank":"Sun Savings Bank, Inc.","service":"pay.starpay.instapay.disburse","trxAmount":"1000"},"signature":"kDwRKA3Z2Vhb+RpPeFOJkLb95MGhK76lSZ4dcLyAcntN93oCoyVxbeSnPX4g8M86xZZ5ubhTTBzsKcyJsAPOlj1bmOOLwy32xwBupbMoCgWtDMl0GtOWVr0xgytFSqnPhAboO4Ftj2JZ7aBVZjSkAiwmkBEFrxHJ+TfNsSXl3fOH6SDIXuAHcMhgouK+SniO7SIkOrT1H4ZAoIYcyTqrzanj4dtMfd1JSugZe1FGrAEb1cumk5sanN/4Qfz+1gc/xHWWMKPAoQjM37scwo/gMqe+0ZZx7mg9K/ALfbKNvVpX38Wy6kCzxiMFYL634trs1bZrEjR0d0kNBbdXOFzc6A=="}"#;
/// The docs' 6.2 response signature: verifies only as a prehash under the PROD key.
const DOC62_RESPONSE_SIG: &str = "lzLsKhNVc/WRUVShuv3F7g5nQZ9aPn1j3/ZXGp4w2mnCfgYIbo0L15K+V1VeGizvjtBow13ZcxSOoXt1FW12DH4iIwerd7iI9erQgDE4POUGqHPgYMl048gpVzay8OJUQkRALbhkJ+J2txB+L2wbfSHZbBYRqp0ajNAVIT6RRZllKTL7Ij2zkw2m4TN/SERq3MMI4lI7hO71jS5KUuWfWULUrHrUTRVeagY4qQ4q5zvc4WlfkOiTZUSZZteMc9UlLzPyADlP+cfdbTVI7l/HVVS6JRLZgprl/SPPmuCfzdCEYbvjgAn6H8NEwissHxa8+RcprpVZ+/4zERJZ6gFLag==";
const DOC62_DIGEST: &str = "871b4bcc961c8783ad06d616f01eafa5404c98f31be048abb5abbcd172e9a569";

fn demo_key() -> PrivateKey {
    PrivateKey::from_text(known::DEMO_PRIVATE_PKCS8_PEM, "demo").unwrap()
}
fn demo_pub() -> PublicKey {
    PublicKey::from_text(known::DEMO_PUBLIC_PEM, "demo public").unwrap()
}
fn sim_key() -> PrivateKey {
    PrivateKey::from_text(known::SIM_PLATFORM_PRIVATE_PEM, "sim").unwrap()
}
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn vectors_a_b_c_reproduce_byte_for_byte_with_both_implementations() {
    let key = demo_key();
    for (tbs, sha, sig) in [
        (A_TBS, A_SHA, A_SIG),
        (B_TBS, B_SHA, B_SIG),
        (C_TBS, C_SHA, C_SIG),
    ] {
        assert_eq!(hex(&Sha256::digest(tbs.as_bytes())), sha);
        assert_eq!(key.sign_b64(tbs.as_bytes()).unwrap(), sig, "aws-lc-rs");
        assert_eq!(
            key.sign_b64_reference(tbs.as_bytes()).unwrap(),
            sig,
            "rsa crate"
        );
        assert_eq!(sig.len(), sign::SIGNATURE_B64_LEN_2048);
    }
}

#[test]
fn each_vector_signature_verifies_only_its_own_bytes() {
    let public = demo_pub();
    let all = [(A_TBS, A_SIG), (B_TBS, B_SIG), (C_TBS, C_SIG)];
    for (i, (tbs, _)) in all.iter().enumerate() {
        for (j, (_, sig)) in all.iter().enumerate() {
            let aws = public.verify_b64(tbs.as_bytes(), sig).is_ok();
            let reference = public.verify_b64_reference(tbs.as_bytes(), sig).is_ok();
            assert_eq!(aws, i == j, "aws-lc {i} {j}");
            assert_eq!(reference, i == j, "rsa {i} {j}");
        }
    }
    for platform in [
        known::UAT_PLATFORM_PUBLIC_PEM,
        known::PROD_PLATFORM_PUBLIC_PEM,
    ] {
        let k = PublicKey::from_text(platform, "platform").unwrap();
        for (tbs, sig) in all {
            assert!(k.verify_b64(tbs.as_bytes(), sig).is_err());
        }
    }
}

#[test]
fn client_form_of_the_2_4_object_is_vector_b_wire_body() {
    // The docs' 2.4 object with its string amount, given in doc order: sorting happens in
    // canonical_bytes, and the envelope carries exactly the signed bytes.
    let mut doc_order = serde_json::Map::new();
    for (k, v) in [
        ("msgId", "161415460871"),
        ("mchId", "105510000001"),
        ("acctNo", "Recipient acctNo"),
        ("acctName", "Recipient account name xx"),
        ("acctMiddleName", "Recipient first name"),
        ("acctLastName", "Recipient last name"),
        ("receivingBank", "Sun Savings Bank, Inc."),
        ("trxAmount", "1000"),
        ("currency", "PHP"),
        ("attach", "Disbursement"),
    ] {
        doc_order.insert(k.into(), json!(v));
    }
    let bytes =
        canonical_bytes(&doc_order, &[("service", "pay.starpay.instapay.disburse")]).unwrap();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), B_TBS);
    let signed = SignedRequest::sign(&demo_key(), bytes).unwrap();
    assert_eq!(std::str::from_utf8(&signed.envelope()).unwrap(), B_WIRE);
}

#[test]
fn docs_6_2_response_signature_is_a_prehash_signature_under_prod_only() {
    let digest: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&DOC62_DIGEST[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let prod = PublicKey::from_text(known::PROD_PLATFORM_PUBLIC_PEM, "prod").unwrap();
    let uat = PublicKey::from_text(known::UAT_PLATFORM_PUBLIC_PEM, "uat").unwrap();
    assert!(prod.verify_prehash_b64(&digest, DOC62_RESPONSE_SIG).is_ok());
    assert!(uat.verify_prehash_b64(&digest, DOC62_RESPONSE_SIG).is_err());
    // The printed response was edited after signing: a verifier must reject it.
    let printed = r#"{
    "response": {
        "code": "200",
        "message": "success",
        "msgId": "1861611528197906432",
        "mchId": "101510000001",
        "trxDate": "2024-11-27T11:18:41+08:00",
        "trxAmount": 10000,
        "trxState": "PROCESSING",
        "originalMsgId": "S110202411271861610566972481536",
        "orderNo": "202411271108369119"
    },
    "signature": "SIG"
}"#
    .replace("SIG", DOC62_RESPONSE_SIG);
    let err = verify_envelope(printed.as_bytes(), Member::Response, &[prod, uat]).unwrap_err();
    assert_eq!(err.error, VerifyError::Mismatch);
    assert!(err.payload.is_some());
}

// ------------------------------------------------------------------ verification

fn signed_response(value_text: &str, key: &PrivateKey) -> Vec<u8> {
    let sig = key.sign_b64(value_text.as_bytes()).unwrap();
    envelope_bytes("response", value_text.as_bytes(), &sig)
}

const RESP: &str = r#"{"code":"200","message":"success","msgId":"Q1","mchId":"101510000001","trxState":"SUCCESS"}"#;

#[test]
fn verifies_raw_bytes_string_form_and_pretty_form() {
    let key = sim_key();
    let keys = [key.public_key().clone()];
    let ok = verify_envelope(&signed_response(RESP, &key), Member::Response, &keys).unwrap();
    assert_eq!(ok.form, VerifiedForm::RawBytes);
    assert_eq!(ok.payload, RESP.as_bytes());

    // `response` as a JSON string holding the object: signature over the decoded string.
    let sig = key.sign_b64(RESP.as_bytes()).unwrap();
    let as_string = format!(
        r#"{{"response":{},"signature":"{sig}"}}"#,
        serde_json::to_string(RESP).unwrap()
    );
    let ok = verify_envelope(as_string.as_bytes(), Member::Response, &keys).unwrap();
    assert_eq!(ok.form, VerifiedForm::StringValue);
    assert_eq!(ok.payload, RESP.as_bytes());

    // Pretty-printed by a proxy, signed compact in the same order: step 4 accepts it.
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(RESP).unwrap())
            .unwrap();
    let body = format!(r#"{{"response":{pretty},"signature":"{sig}"}}"#);
    let ok = verify_envelope(body.as_bytes(), Member::Response, &keys).unwrap();
    assert_eq!(ok.form, VerifiedForm::CompactedWhitespace);
}

#[test]
fn negative_verification_cases_give_the_distinct_error() {
    let key = sim_key();
    let keys = [key.public_key().clone()];
    let good_sig = key.sign_b64(RESP.as_bytes()).unwrap();
    let wrap = |value: &str, sig: &str| format!(r#"{{"response":{value},"signature":"{sig}"}}"#);

    let tampered = RESP.replace("SUCCESS", "FAIL");
    let reordered = r#"{"message":"success","code":"200","msgId":"Q1","mchId":"101510000001","trxState":"SUCCESS"}"#;
    let sorted_whitespace = RESP.replace(",", ", ");
    let mut truncated = good_sig.clone();
    truncated.truncate(201);
    let cases: Vec<(&str, String, VerifyError)> = vec![
        (
            "tampered value",
            wrap(&tampered, &good_sig),
            VerifyError::Mismatch,
        ),
        (
            "re-ordered keys",
            wrap(reordered, &good_sig),
            VerifyError::Mismatch,
        ),
        // Whitespace inside the signed form: compaction gives RESP back and would verify, so add
        // whitespace to a *tampered* value to check that compaction never launders a change.
        (
            "added whitespace + change",
            wrap(&sorted_whitespace.replace("SUCCESS", "FAIL"), &good_sig),
            VerifyError::Mismatch,
        ),
        (
            "wrong key",
            wrap(RESP, &demo_key().sign_b64(RESP.as_bytes()).unwrap()),
            VerifyError::Mismatch,
        ),
        (
            "truncated signature",
            wrap(RESP, &truncated),
            VerifyError::SignatureNotBase64,
        ),
        (
            "non-Base64 signature",
            wrap(RESP, "!!!not base64!!!"),
            VerifyError::SignatureNotBase64,
        ),
        (
            "valid Base64, wrong length",
            wrap(RESP, "AAAA"),
            VerifyError::Mismatch,
        ),
        (
            "missing signature",
            format!(r#"{{"response":{RESP}}}"#),
            VerifyError::MissingSignature,
        ),
        (
            "null signature",
            format!(r#"{{"response":{RESP},"signature":null}}"#),
            VerifyError::MissingSignature,
        ),
        (
            "response missing",
            format!(r#"{{"signature":"{good_sig}"}}"#),
            VerifyError::MissingPayload("response"),
        ),
        (
            "not JSON",
            "<html>502 Bad Gateway</html>".to_string(),
            VerifyError::NotEnvelope(String::new()),
        ),
        (
            "response is a number",
            format!(r#"{{"response":5,"signature":"{good_sig}"}}"#),
            VerifyError::BadPayload("response"),
        ),
    ];
    for (name, body, want) in cases {
        let err = verify_envelope(body.as_bytes(), Member::Response, &keys).expect_err(name);
        match (&err.error, &want) {
            (VerifyError::NotEnvelope(_), VerifyError::NotEnvelope(_)) => {}
            (got, want) => assert_eq!(got, want, "{name}"),
        }
    }
    // Whitespace added to the *request* bytes: a request is verified strictly over raw bytes
    // (simulator, reference §3.4), so spaced bytes fail against the compact signature.
    let spaced = B_TBS.replace(",", ", ");
    assert!(demo_pub().verify_b64(spaced.as_bytes(), B_SIG).is_err());
}

#[test]
fn notifications_verify_as_object_array_or_string() {
    let key = sim_key();
    let keys = [key.public_key().clone()];
    let n = r#"{"code":"200","message":"success","trxDate":"2025-01-15T10:02:11+08:00","trxAmount":150000,"trxState":"FAIL","originalMsgId":"D2501150000010001","orderNo":"202501150000000017","mchId":"101510000001","errorCode":"AC01","errorMessage":"Incorrect Account Number"}"#;
    let sig = key.sign_b64(n.as_bytes()).unwrap();
    let body = envelope_bytes("request", n.as_bytes(), &sig);
    let got = verify_notification(&body, &keys).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].trx_state, TrxState::Fail);
    assert_eq!(got[0].trx_amount, Centavos::new(150000));

    let arr = format!("[{n},{n}]");
    let sig = key.sign_b64(arr.as_bytes()).unwrap();
    assert_eq!(
        verify_notification(&envelope_bytes("request", arr.as_bytes(), &sig), &keys)
            .unwrap()
            .len(),
        2
    );

    let tampered = envelope_bytes(
        "request",
        n.replace("FAIL", "SUCCESS").as_bytes(),
        &key.sign_b64(n.as_bytes()).unwrap(),
    );
    assert!(verify_notification(&tampered, &keys).is_err());
}

// ------------------------------------------------------------------ models round-trip

fn demo_msg(s: &str) -> MsgId {
    MsgId::new(s).unwrap()
}
fn mch() -> MchId {
    MchId::new(known::DEMO_MCH_ID).unwrap()
}

/// Sign a request as the client does, frame it, verify it as the simulator does, parse it back.
fn request_round_trip<O: Operation + PartialEq + std::fmt::Debug>(req: O) {
    let key = demo_key();
    let bytes = canonical_bytes(&req, &[("service", O::SERVICE)]).unwrap();
    let signed = SignedRequest::sign(&key, bytes.clone()).unwrap();
    let wire = signed.envelope();
    let verified = verify_envelope(&wire, Member::Request, &[demo_pub()]).unwrap();
    assert_eq!(verified.payload, bytes);
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&verified.payload).unwrap();
    let keys: Vec<&String> = map.keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{} keys sorted", O::SECTION);
    assert_eq!(map["service"], O::SERVICE);
    let back: O = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(back, req, "{}", O::SECTION);
}

/// Emit a response as the simulator does (documented order, platform key), verify, parse back.
fn response_round_trip<R: ApiResponse + PartialEq + std::fmt::Debug>(resp: R) {
    let key = sim_key();
    let bytes = serde_json::to_vec(&resp).unwrap();
    let body = envelope_bytes("response", &bytes, &key.sign_b64(&bytes).unwrap());
    let verified = verify_envelope(&body, Member::Response, &[key.public_key().clone()]).unwrap();
    let back: R = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn every_request_model_round_trips_through_the_envelope() {
    let amount = Centavos::new(150_050);
    request_round_trip(BankListRequest {
        msg_id: demo_msg("B1"),
        mch_id: mch(),
    });
    request_round_trip(InstapayDisburseRequest {
        msg_id: demo_msg("D1"),
        mch_id: mch(),
        acct_no: "09171234567".into(),
        acct_name: "José".into(),
        acct_middle_name: String::new(),
        acct_last_name: "Dela Cruz / Peña \"Jr\"".into(),
        receiving_bank: "Sun Savings Bank, Inc.".into(),
        trx_amount: amount,
        currency: Currency::Php,
        attach: Some("Payroll 2025-01".into()),
        notify_url: Some("http://127.0.0.1:9/notify".into()),
    });
    request_round_trip(WalletDisburseRequest {
        msg_id: demo_msg("W1"),
        mch_id: mch(),
        acct_no: "09170000001".into(),
        acct_name: "Ana".into(),
        acct_middle_name: "M".into(),
        acct_last_name: "Reyes".into(),
        trx_amount: amount,
        currency: Currency::Php,
        attach: None,
        notify_url: None,
    });
    request_round_trip(DisburseQueryRequest {
        msg_id: demo_msg("Q1"),
        mch_id: mch(),
        original_msg_id: demo_msg("D1"),
    });
    request_round_trip(DisburseBalanceRequest {
        msg_id: demo_msg("BAL1"),
        mch_id: mch(),
    });
    request_round_trip(ScanQrRequest {
        msg_id: demo_msg("S1"),
        mch_id: mch(),
        qr_code: "00020101021128...6304ABCD".into(),
    });
    request_round_trip(QrP2mDisburseRequest {
        msg_id: demo_msg("P1"),
        mch_id: mch(),
        qr_code: "qr".into(),
        trx_amount: amount,
        currency: Currency::Php,
        attach: None,
        notify_url: None,
    });
    request_round_trip(QrP2pDisburseRequest {
        msg_id: demo_msg("P2"),
        mch_id: mch(),
        qr_code: "qr".into(),
        trx_amount: amount,
        currency: Currency::Php,
        attach: Some("x".into()),
        notify_url: None,
    });
    request_round_trip(RepaymentRequest {
        msg_id: demo_msg("R1"),
        mch_id: mch(),
        notify_url: "http://127.0.0.1:9/n".into(),
        device_info: "8CYGISAS".into(),
        trx_amount: amount,
        currency: Currency::Php,
        attach: None,
        time_start: Some("20240513172537".into()),
        time_expire: Some("20240513174037".into()),
        display_name: Some("Shop".into()),
    });
    request_round_trip(RepaymentQueryRequest {
        msg_id: demo_msg("1861611528197906432"),
        mch_id: mch(),
        original_msg_id: demo_msg("S110202411271861610566972481536"),
    });
    request_round_trip(StaticQrRequest {
        msg_id: demo_msg("1732525478868"),
        mch_id: mch(),
        device_info: "8CYGISAS".into(),
        display_name: "displayName111".into(),
        notify_url: "http://127.0.0.1:9011/n".into(),
    });
    request_round_trip(RepaymentBalanceRequest {
        msg_id: demo_msg("RB1"),
        mch_id: mch(),
    });
    request_round_trip(StaticQrStatusRequest {
        msg_id: demo_msg("ST1"),
        mch_id: mch(),
        device_info: "8CYGISAS".into(),
        qr_status: QrStatus::Disable,
    });
    request_round_trip(RefNoQueryRequest {
        msg_id: demo_msg("RF1"),
        mch_id: mch(),
        ref_no: "1234567890123456".into(),
    });
    request_round_trip(RepaymentCancelRequest {
        msg_id: demo_msg("C1"),
        mch_id: mch(),
        original_msg_id: demo_msg("R1"),
    });
}

#[test]
fn every_response_and_notification_model_round_trips_through_the_envelope() {
    let ok = || Code::new("200");
    let s = |v: &str| Some(v.to_string());
    let amount = Some(Centavos::new(10000));
    response_round_trip(BankListResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("B1"),
        mch_id: s("101510000001"),
        banks: Some(vec![Bank {
            bank_code: "SSB".into(),
            bank_name: "Sun Savings Bank, Inc.".into(),
        }]),
    });
    response_round_trip(DisburseResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("D1"),
        mch_id: s("M"),
        trx_date: s("2025-01-15T10:02:11+08:00"),
        trx_amount: amount,
        trx_state: Some(TrxState::Processing),
        order_no: s("202501150000000017"),
        error_code: None,
        error_message: None,
    });
    response_round_trip(DisburseResponse {
        code: Code::new("412"),
        message: "Illegal parameter: trxAmount".into(),
        msg_id: s("D1"),
        mch_id: s("M"),
        trx_date: None,
        trx_amount: None,
        trx_state: None,
        order_no: None,
        error_code: None,
        error_message: None,
    });
    response_round_trip(QueryResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("Q1"),
        mch_id: s("M"),
        trx_date: s("d"),
        trx_amount: amount,
        trx_state: Some(TrxState::Unknown("ON_HOLD".into())),
        original_msg_id: s("D1"),
        order_no: s("O"),
        ref_no: s("1234"),
        error_code: s("AB05"),
        error_message: s("Timeout Creditor Agent"),
    });
    response_round_trip(BalanceResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("B"),
        mch_id: s("M"),
        balance: Some(Centavos::new(0)),
        currency: s("PHP"),
    });
    response_round_trip(ScanQrResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("S"),
        mch_id: s("M"),
        qr_type: s("P2M"),
        acct_name: s("Store"),
        acct_no: s("123"),
        receiving_bank: s("GCash"),
        trx_amount: None,
    });
    response_round_trip(RepaymentResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("R"),
        mch_id: s("M"),
        order_no: s("O"),
        code_url: s("000201..."),
        trx_amount: amount,
        trx_state: Some(TrxState::Processing),
    });
    response_round_trip(StaticQrResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("S"),
        mch_id: s("M"),
        device_info: s("8CYGISAS"),
        code_url: s("000201"),
    });
    response_round_trip(StaticQrStatusResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("S"),
        mch_id: s("M"),
        device_info: s("8CYGISAS"),
        qr_status: Some(QrStatus::Enable),
    });
    response_round_trip(CancelResponse {
        code: ok(),
        message: "success".into(),
        msg_id: s("C"),
        mch_id: s("M"),
        original_msg_id: s("R"),
        order_no: s("O"),
        trx_state: Some(TrxState::Cancel),
    });
    response_round_trip(HealthResponse {
        code: ok(),
        message: "success".into(),
    });

    let key = sim_key();
    let n = Notification {
        code: ok(),
        message: "success".into(),
        trx_date: "2024-11-25T17:49:51+08:00".into(),
        trx_amount: Centavos::new(10000),
        trx_state: TrxState::Success,
        original_msg_id: "202411251100630001".into(),
        order_no: "O".into(),
        mch_id: "101510000001".into(),
        device_info: s("8CYGISAS"),
        ref_no: s("1234567890123456"),
        error_code: None,
        error_message: None,
    };
    let bytes = serde_json::to_vec(&n).unwrap();
    assert!(std::str::from_utf8(&bytes)
        .unwrap()
        .starts_with(r#"{"code":"200","message":"success","trxDate":"#));
    let body = envelope_bytes("request", &bytes, &key.sign_b64(&bytes).unwrap());
    assert_eq!(
        verify_notification(&body, &[key.public_key().clone()]).unwrap(),
        vec![n]
    );
}

#[test]
fn canonical_bytes_refuse_null_float_bool_and_nested() {
    for bad in [
        json!({"a": null}),
        json!({"a": 1.5}),
        json!({"a": true}),
        json!({"a": [1]}),
        json!([1]),
    ] {
        assert!(canonical_bytes(&bad, &[]).is_err(), "{bad}");
    }
    // Non-ASCII raw, `/` unescaped, quotes and control characters escaped.
    let v = json!({"b": "ñ/\"\n", "a": 1});
    assert_eq!(
        canonical_bytes(&v, &[]).unwrap(),
        "{\"a\":1,\"b\":\"ñ/\\\"\\n\"}".as_bytes()
    );
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any request serializes to sorted, compact JSON whose signature verifies, and both
    /// signers agree byte for byte.
    #[test]
    fn any_request_is_sorted_compact_and_verifies(
        msg in "[A-Za-z0-9]{1,32}",
        acct_no in "[A-Za-z0-9]{1,34}",
        name in arb_text(64),
        middle in arb_text(16),
        last in arb_text(64),
        bank in arb_text(40),
        amount in 1i64..=5_000_000,
        attach in proptest::option::of(arb_text(92)),
    ) {
        let req = InstapayDisburseRequest {
            msg_id: MsgId::new(msg).unwrap(),
            mch_id: mch(),
            acct_no,
            acct_name: name,
            acct_middle_name: middle,
            acct_last_name: last,
            receiving_bank: bank,
            trx_amount: Centavos::new(amount),
            currency: Currency::Php,
            attach,
            notify_url: None,
        };
        let bytes = canonical_bytes(&req, &[("service", InstapayDisburseRequest::SERVICE)]).unwrap();
        // Compact and order-preserving re-serialization gives the same bytes: no whitespace.
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(serde_json::to_vec(&parsed).unwrap(), bytes.clone());
        let keys: Vec<&String> = parsed.keys().collect();
        prop_assert!(keys.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
        let key = demo_key();
        let signed = SignedRequest::sign(&key, bytes.clone()).unwrap();
        prop_assert!(demo_pub().verify_b64(&bytes, &signed.signature).is_ok());
        prop_assert!(demo_pub().verify_b64_reference(&bytes, &signed.signature).is_ok());
        prop_assert_eq!(&key.sign_b64_reference(&bytes).unwrap(), &signed.signature);
        let verified = verify_envelope(&signed.envelope(), Member::Request, &[demo_pub()]).unwrap();
        let back: InstapayDisburseRequest = serde_json::from_slice(&verified.payload).unwrap();
        prop_assert_eq!(back, req);
    }
}

// ------------------------------------------------------------------ openssl

/// Every wire body verifies with the real `openssl dgst -sha256 -verify` over its `request`
/// bytes. Needs the `openssl` binary (`.ci/run` installs it); without it this test fails
/// rather than pass with zero checks.
#[test]
fn wire_bodies_verify_with_the_openssl_binary() {
    let version = Command::new("openssl").arg("version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "the openssl binary is needed for this cross-check (apt-get install -y openssl): {version:?}"
    );
    let mut checked = 0;
    let dir = tempfile::tempdir().unwrap();
    let pub_path = dir.path().join("pub.pem");
    std::fs::write(&pub_path, known::DEMO_PUBLIC_PEM).unwrap();
    let key = demo_key();
    let requests: Vec<Vec<u8>> = vec![
        canonical_bytes(
            &InstapayDisburseRequest {
                msg_id: demo_msg("OSSL1"),
                mch_id: mch(),
                acct_no: "123".into(),
                acct_name: "Niño".into(),
                acct_middle_name: String::new(),
                acct_last_name: "Sto. Tomás".into(),
                receiving_bank: "GCash".into(),
                trx_amount: Centavos::new(1),
                currency: Currency::Php,
                attach: None,
                notify_url: None,
            },
            &[("service", InstapayDisburseRequest::SERVICE)],
        )
        .unwrap(),
        canonical_bytes(
            &DisburseQueryRequest {
                msg_id: demo_msg("OSSL2"),
                mch_id: mch(),
                original_msg_id: demo_msg("OSSL1"),
            },
            &[("service", DisburseQueryRequest::SERVICE)],
        )
        .unwrap(),
        B_TBS.as_bytes().to_vec(),
    ];
    for (i, bytes) in requests.into_iter().enumerate() {
        let wire = SignedRequest::sign(&key, bytes).unwrap().envelope();
        // Extract `request` bytes and signature from the wire body as a receiver would.
        let split = sign::split_envelope(&wire, Member::Request).unwrap();
        let data = dir.path().join(format!("req{i}.json"));
        let sig = dir.path().join(format!("req{i}.sig"));
        std::fs::write(&data, split.raw.as_bytes()).unwrap();
        let sig_bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            split.signature.unwrap(),
        )
        .unwrap();
        std::fs::write(&sig, sig_bytes).unwrap();
        let out = Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pub_path)
            .arg("-signature")
            .arg(&sig)
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
        checked += 1;
        // And a tampered body does not verify: openssl really checks.
        let mut tampered = split.raw.as_bytes().to_vec();
        tampered[1] ^= 0x01;
        std::fs::write(&data, &tampered).unwrap();
        let bad = Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pub_path)
            .arg("-signature")
            .arg(&sig)
            .arg(&data)
            .output()
            .unwrap();
        assert!(!bad.status.success(), "a tampered body must not verify");
    }
    assert_eq!(checked, 3, "every wire body was checked by openssl");
}

// ------------------------------------------------------------------ key loading

fn samples(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/keys")
        .join(name)
}

#[test]
fn every_supported_key_format_loads_to_the_same_key() {
    let reference = demo_key().sign_b64(B_TBS.as_bytes()).unwrap();
    for f in [
        "TEST-ONLY-demo-merchant-private.pem",
        "TEST-ONLY-demo-merchant-private.b64",
        "TEST-ONLY-demo-merchant-private-pkcs1.pem",
    ] {
        let k = PrivateKey::from_file(&samples(f)).unwrap();
        assert_eq!(k.sign_b64(B_TBS.as_bytes()).unwrap(), reference, "{f}");
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
    }
    for f in [
        "TEST-ONLY-demo-merchant-public.pem",
        "TEST-ONLY-demo-merchant-public.b64",
    ] {
        let k = PublicKey::from_file(&samples(f)).unwrap();
        assert!(k.verify_b64(B_TBS.as_bytes(), B_SIG).is_ok(), "{f}");
    }
    // One-line PEM body (how platform keys circulate) loads too.
    let one_line = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        std::fs::read_to_string(samples("TEST-ONLY-demo-merchant-public.b64"))
            .unwrap()
            .trim()
    );
    assert!(PublicKey::from_text(&one_line, "one-line").is_ok());
    // The exported forms round-trip.
    let k = demo_pub();
    assert_eq!(PublicKey::from_text(&k.to_one_line_b64(), "x").unwrap(), k);
    assert_eq!(PublicKey::from_text(&k.to_pem(), "x").unwrap(), k);
    let generated = PrivateKey::generate().unwrap();
    let reloaded = PrivateKey::from_text(&generated.to_pkcs8_pem(), "gen").unwrap();
    assert_eq!(reloaded.public_key(), generated.public_key());
    assert_eq!(generated.public_key().bits(), 2048);
}

#[test]
fn key_mistakes_give_clear_errors_not_panics() {
    let public_as_private =
        PrivateKey::from_file(&samples("TEST-ONLY-demo-merchant-public.pem")).unwrap_err();
    assert!(matches!(
        public_as_private,
        KeyError::PublicGivenAsPrivate { .. }
    ));
    assert!(public_as_private
        .to_string()
        .contains("TEST-ONLY-demo-merchant-public.pem"));
    let b64_public_as_private =
        PrivateKey::from_file(&samples("TEST-ONLY-demo-merchant-public.b64")).unwrap_err();
    assert!(matches!(
        b64_public_as_private,
        KeyError::PublicGivenAsPrivate { .. }
    ));
    let private_as_public =
        PublicKey::from_file(&samples("TEST-ONLY-demo-merchant-private.pem")).unwrap_err();
    assert!(matches!(
        private_as_public,
        KeyError::PrivateGivenAsPublic { .. }
    ));
    let b64_private_as_public =
        PublicKey::from_file(&samples("TEST-ONLY-demo-merchant-private.b64")).unwrap_err();
    assert!(matches!(
        b64_private_as_public,
        KeyError::PrivateGivenAsPublic { .. }
    ));
    let missing = PrivateKey::from_file(Path::new("/nonexistent/key.pem")).unwrap_err();
    assert!(matches!(missing, KeyError::Read { .. }));
    assert!(missing.to_string().contains("/nonexistent/key.pem"));

    let junk: &[(&str, &str)] = &[
        ("", "empty"),
        ("hello world", "not base64"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "short body",
        ),
        ("-----BEGIN PRIVATE KEY-----\nMIIE\n", "no end line"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "csr",
        ),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        ),
        ("QUJDRA==", "base64 of ABCD"),
        ("\u{0}\u{1}\u{2}", "binary"),
    ];
    for (text, name) in junk {
        let e = PrivateKey::from_text(text, "key.pem").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("key.pem"), "{name}: {msg}");
        let e = PublicKey::from_text(text, "pub.pem").unwrap_err();
        assert!(e.to_string().contains("pub.pem"), "{name}");
    }
    // Keys under 2048 bits are refused (a 1024-bit key, generated by openssl for this test).
    let small = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFg7DGa9WuhZAHbBSk5j3PD3QK
+QncmV+P8XUpuSJfzlAOvze6kJqT9bfEOZLUdFseAG8Ko9TzcGLCYr0XKt24vUUX
ws6GffccInVGoFKcxJZGxnOL/1SWCuZmPvgg6oajMIby9b3XA5F3u0IgdyKVXeEz
3zigrCn5CbZ3v1qtWwIDAQAB
-----END PUBLIC KEY-----
";
    match PublicKey::from_text(small, "small.pem") {
        Err(KeyError::TooSmall { bits, .. }) => assert_eq!(bits, 1024),
        other => panic!("1024-bit key accepted or odd error: {other:?}"),
    }
}
