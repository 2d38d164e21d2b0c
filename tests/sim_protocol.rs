//! Simulator protocol tests over real HTTP with the real client: every code of the validation
//! order (reference §11), signature strictness, repeated msgIds, balances and the endpoints.

mod sim_common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sim_common::*;
use starpay_batch::domain::{Centavos, MchId, TrxState};
use starpay_batch::server::sim::{MerchantConfig, MerchantStatus};
use starpay_batch::starpay::client::{Answer, ClientError};
use starpay_batch::starpay::model::*;
use starpay_batch::starpay::sign::{known, PrivateKey, SignedRequest};

fn code<R: ApiResponse>(r: &Result<Answer<R>, ClientError>) -> String {
    match r {
        Ok(a) => a.response.code().as_str().to_string(),
        Err(e) => panic!("expected an answer, got {e}"),
    }
}

fn message<R: ApiResponse>(r: &Result<Answer<R>, ClientError>) -> String {
    r.as_ref().unwrap().response.message().to_string()
}

#[tokio::test]
async fn payout_is_accepted_queried_and_settles() {
    let (h, c) = start(config()).await;
    let health = c.check_connection().await.unwrap();
    assert_eq!(health.code.as_str(), "200");
    let r = c
        .disburse_instapay(&payout(DEMO, "P1", "12345678", 150_000))
        .await;
    assert_eq!(code(&r), "200");
    let resp = r.unwrap().response;
    assert_eq!(resp.trx_state, Some(TrxState::Processing));
    let order_no = resp.order_no.unwrap();
    assert_eq!(order_no.len(), 18);
    let date = resp.trx_date.unwrap();
    assert!(date.ends_with("+08:00") && date.len() == 25, "{date}");
    let q = c
        .query_disbursement(&query("Q1", "P1"))
        .await
        .unwrap()
        .response;
    assert_eq!(q.trx_state, Some(TrxState::Processing));
    assert_eq!(q.ref_no, None);
    h.advance(5);
    let q = c
        .query_disbursement(&query("Q2", "P1"))
        .await
        .unwrap()
        .response;
    assert_eq!(q.trx_state, Some(TrxState::Success));
    assert_eq!(q.order_no.as_deref(), Some(order_no.as_str()));
    assert_eq!(q.trx_date.as_deref(), Some(date.as_str()));
    assert_eq!(q.ref_no.as_ref().map(String::len), Some(16));
    // 404: unknown query target.
    let r = c.query_disbursement(&query("Q3", "NOPE")).await;
    assert_eq!(code(&r), "404");
    // Every request was recorded with its code.
    let reqs = h.requests();
    assert!(reqs
        .iter()
        .any(|r| r.msg_id.as_deref() == Some("Q3") && r.code.as_deref() == Some("404")));
    h.shutdown().await;
}

#[tokio::test]
async fn validation_order_codes() {
    let mut cfg = config();
    let mut limited = MerchantConfig::demo("105510000001");
    limited.services = vec!["unified.disburse.balance".into()];
    cfg.merchants = vec![MerchantConfig::demo(DEMO), limited];
    let (h, c) = start(cfg).await;
    let key = demo_key();

    // 400: `request` is not an object.
    let bad = SignedRequest {
        bytes: b"[1,2]".to_vec(),
        signature: "x".into(),
    };
    let r = c.send::<DisburseBalanceRequest>(&bad).await;
    assert_eq!(code(&r), "400");

    // 410: unknown merchant.
    let stranger = client_with(&h, "999999999999", Arc::clone(&key), Duration::from_secs(5));
    let mut req = balance_req("B410");
    req.mch_id = MchId::new("999999999999").unwrap();
    assert_eq!(code(&stranger.disbursement_balance(&req).await), "410");

    // 401: signature not 256 bytes.
    let mut s = c.sign(&balance_req("B401")).await.unwrap();
    s.signature = "AAAA".into();
    assert_eq!(code(&c.send::<DisburseBalanceRequest>(&s).await), "401");

    // 402: signed with another key.
    let other = Arc::new(PrivateKey::generate().unwrap());
    let wrong = client_with(&h, DEMO, other, Duration::from_secs(5));
    assert_eq!(
        code(&wrong.disbursement_balance(&balance_req("B402")).await),
        "402"
    );

    // 412: service unknown on this path.
    let mut m = serde_json::Map::new();
    m.insert("msgId".into(), json!("B412S"));
    m.insert("mchId".into(), json!(DEMO));
    m.insert("service".into(), json!("pay.starpay.instapay.disburse"));
    let s = signed_map(&key, &m);
    let r = c.send::<DisburseBalanceRequest>(&s).await;
    assert_eq!(code(&r), "412");
    assert_eq!(message(&r), "Illegal parameter: service");

    // 411: service not enabled for this merchant.
    let limited = client_with(&h, "105510000001", Arc::clone(&key), Duration::from_secs(5));
    let r = limited
        .disburse_instapay(&payout("105510000001", "L411", "1234", 100))
        .await;
    assert_eq!(code(&r), "411");
    let mut b = balance_req("L200");
    b.mch_id = MchId::new("105510000001").unwrap();
    assert_eq!(code(&limited.disbursement_balance(&b).await), "200");

    // 414: merchant suspended (checked after the signature).
    h.set_merchant_status(DEMO, MerchantStatus::Suspended)
        .unwrap();
    assert_eq!(
        code(&c.disbursement_balance(&balance_req("B414")).await),
        "414"
    );
    assert_eq!(
        code(&wrong.disbursement_balance(&balance_req("B414W")).await),
        "402"
    );
    h.set_merchant_status(DEMO, MerchantStatus::Active).unwrap();

    // 412 field validation: cap, currency, msgId format, missing field, amount as string ok.
    let cases = [
        (payout_map("F1", "1234", json!(5_000_001)), "trxAmount"),
        (payout_map("F2", "1234", json!(0)), "trxAmount"),
        (payout_map("F3", "1234", json!("12.50")), "trxAmount"),
        (payout_map("F-4", "1234", json!(100)), "msgId"),
        (payout_map("F5", "12 34", json!(100)), "acctNo"),
    ];
    for (map, field) in cases {
        let r = c
            .send::<InstapayDisburseRequest>(&signed_map(&key, &map))
            .await;
        assert_eq!(code(&r), "412", "{field}");
        assert_eq!(message(&r), format!("Illegal parameter: {field}"));
    }
    let mut usd = payout_map("F6", "1234", json!(100));
    usd.insert("currency".into(), json!("USD"));
    assert_eq!(
        message(
            &c.send::<InstapayDisburseRequest>(&signed_map(&key, &usd))
                .await
        ),
        "Illegal parameter: currency"
    );
    let mut missing = payout_map("F7", "1234", json!(100));
    missing.remove("acctLastName");
    assert_eq!(
        message(
            &c.send::<InstapayDisburseRequest>(&signed_map(&key, &missing))
                .await
        ),
        "Illegal parameter: acctLastName"
    );
    let mut bank = payout_map("F8", "1234", json!(100));
    bank.insert("receivingBank".into(), json!("Nonexistent Bank"));
    assert_eq!(
        message(
            &c.send::<InstapayDisburseRequest>(&signed_map(&key, &bank))
                .await
        ),
        "Illegal parameter: receivingBank"
    );
    // A 412 does not consume the msgId: fixed and resent, F1 is accepted.
    let r = c
        .send::<InstapayDisburseRequest>(&signed_map(
            &key,
            &payout_map("F1", "1234", json!("5000000")),
        ))
        .await;
    assert_eq!(code(&r), "200");
    assert_eq!(
        r.unwrap().response.trx_amount,
        Some(Centavos::new(5_000_000))
    );
    // 5.3 has no InstaPay cap.
    let wallet = WalletDisburseRequest {
        msg_id: msg("W1"),
        mch_id: MchId::new(DEMO).unwrap(),
        acct_no: "09171234567".into(),
        acct_name: "Ana".into(),
        acct_middle_name: "".into(),
        acct_last_name: "Santos".into(),
        trx_amount: Centavos::new(6_000_000),
        currency: Currency::Php,
        attach: Some("wallet".into()),
        notify_url: None,
    };
    assert_eq!(code(&c.disburse_wallet(&wallet).await), "200");

    // Unknown path: HTTP 404 without envelope.
    let (status, _) = raw_post(&format!("{}/v1/nothing", h.base_url()), "{}").await;
    assert_eq!(status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limit_and_0900_give_406() {
    let mut cfg = config();
    cfg.rate_limit_per_sec = 1.0;
    cfg.rate_limit_burst = 3;
    let (h, c) = start(cfg).await;
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(code(
            &c.disbursement_balance(&balance_req(&format!("R{i}"))).await,
        ));
    }
    assert_eq!(&codes[..3], ["200", "200", "200"]);
    assert!(codes[3..].iter().all(|c| c == "406"), "{codes:?}");
    // A 406 does not consume the msgId.
    h.set_rate_limit(0.0, 1);
    assert_eq!(
        code(&c.disbursement_balance(&balance_req("R4")).await),
        "200"
    );
    // 0900: 406 the first time each msgId is seen, then processed.
    let p = payout(DEMO, "N1", "5550900", 100);
    assert_eq!(code(&c.disburse_instapay(&p).await), "406");
    assert_eq!(code(&c.disburse_instapay(&p).await), "200");
    assert_eq!(code(&c.disburse_instapay(&p).await), "403");
    h.shutdown().await;
}

#[tokio::test]
async fn repeated_msg_id_is_403_without_side_effect() {
    let (h, c) = start(config()).await;
    let p = payout(DEMO, "DUP1", "1234", 1_000);
    let before = h.ledger().balances[DEMO].disbursement;
    assert_eq!(code(&c.disburse_instapay(&p).await), "200");
    let r = c.disburse_instapay(&p).await;
    assert_eq!(code(&r), "403");
    assert_eq!(message(&r), "Repeated msgId");
    let ledger = h.ledger();
    let orders: Vec<_> = ledger
        .orders
        .iter()
        .filter(|o| o.msg_id == "DUP1")
        .collect();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].create_requests, 2);
    assert_eq!(ledger.balances[DEMO].disbursement, before - 1_000);
    // Queries consume their msgId too; reusing a query id is 403.
    assert_eq!(
        code(&c.query_disbursement(&query("DQ", "DUP1")).await),
        "200"
    );
    assert_eq!(
        code(&c.query_disbursement(&query("DQ", "DUP1")).await),
        "403"
    );
    // A payout msgId reused as a query id is 403 as well (unique over all requests).
    assert_eq!(
        code(&c.query_disbursement(&query("DUP1", "DUP1")).await),
        "403"
    );
    assert_eq!(h.ledger().order("DUP1").unwrap().create_requests, 2);
    h.shutdown().await;
}

#[tokio::test]
async fn tampered_signatures_are_rejected_and_leave_no_order() {
    let mut cfg = config();
    cfg.merchants = vec![
        MerchantConfig::demo(DEMO),
        MerchantConfig::demo("105510000001"),
    ];
    let (h, c) = start(cfg).await;
    let key = demo_key();
    let original = c.sign(&payout(DEMO, "T1", "1234", 100)).await.unwrap();
    // Keys re-ordered after signing (document order instead of sorted).
    let v: serde_json::Map<String, Value> = serde_json::from_slice(&original.bytes).unwrap();
    let mut reordered: Vec<(String, Value)> = v.into_iter().collect();
    reordered.reverse();
    let reordered: serde_json::Map<String, Value> = reordered.into_iter().collect();
    let bytes = serde_json::to_vec(&reordered).unwrap();
    assert_ne!(bytes, original.bytes);
    let s = SignedRequest {
        bytes,
        signature: original.signature.clone(),
    };
    assert_eq!(code(&c.send::<InstapayDisburseRequest>(&s).await), "402");
    // Whitespace added.
    let spaced = String::from_utf8(original.bytes.clone())
        .unwrap()
        .replace("\",\"", "\", \"");
    let s = SignedRequest {
        bytes: spaced.into_bytes(),
        signature: original.signature.clone(),
    };
    assert_eq!(code(&c.send::<InstapayDisburseRequest>(&s).await), "402");
    // Wrong key.
    let other = client_with(
        &h,
        DEMO,
        Arc::new(PrivateKey::generate().unwrap()),
        Duration::from_secs(5),
    );
    assert_eq!(
        code(
            &other
                .disburse_instapay(&payout(DEMO, "T1", "1234", 100))
                .await
        ),
        "402"
    );
    assert!(h.ledger().orders.is_empty());
    // The untouched original is accepted afterwards: the rejections consumed nothing.
    assert_eq!(
        code(&c.send::<InstapayDisburseRequest>(&original).await),
        "200"
    );
    assert_eq!(h.ledger().orders.len(), 1);

    // test-vectors.md §4: B's wire body (demo key, mchId 105510000001) passes the signature
    // check (its acctNo "Recipient acctNo" then fails field validation: 412, not 401/402).
    let b_sig = "kDwRKA3Z2Vhb+RpPeFOJkLb95MGhK76lSZ4dcLyAcntN93oCoyVxbeSnPX4g8M86xZZ5ubhTTBzsKcyJsAPOlj1bmOOLwy32xwBupbMoCgWtDMl0GtOWVr0xgytFSqnPhAboO4Ftj2JZ7aBVZjSkAiwmkBEFrxHJ+TfNsSXl3fOH6SDIXuAHcMhgouK+SniO7SIkOrT1H4ZAoIYcyTqrzanj4dtMfd1JSugZe1FGrAEb1cumk5sanN/4Qfz+1gc/xHWWMKPAoQjM37scwo/gMqe+0ZZx7mg9K/ALfbKNvVpX38Wy6kCzxiMFYL634trs1bZrEjR0d0kNBbdXOFzc6A==";
    let b_bytes = r#"{"acctLastName":"Recipient last name","acctMiddleName":"Recipient first name","acctName":"Recipient account name xx","acctNo":"Recipient acctNo","attach":"Disbursement","currency":"PHP","mchId":"105510000001","msgId":"161415460871","receivingBank":"Sun Savings Bank, Inc.","service":"pay.starpay.instapay.disburse","trxAmount":"1000"}"#;
    let b = SignedRequest {
        bytes: b_bytes.as_bytes().to_vec(),
        signature: b_sig.into(),
    };
    let r = c.send::<InstapayDisburseRequest>(&b).await;
    assert_eq!(code(&r), "412");
    assert_eq!(message(&r), "Illegal parameter: acctNo");
    // A's bytes with B's signature: 402.
    let a_bytes = r#"{"msgId":"161415460871","mchId":"105510000001","acctNo":"Recipient acctNo","acctName":"Recipient account name xx","acctMiddleName":"Recipient first name","acctLastName":"Recipient last name","receivingBank":"Sun Savings Bank, Inc.","trxAmount":"1000","currency":"PHP","service":"pay.starpay.instapay.disburse","attach":"Disbursement"}"#;
    let a = SignedRequest {
        bytes: a_bytes.as_bytes().to_vec(),
        signature: b_sig.into(),
    };
    assert_eq!(code(&c.send::<InstapayDisburseRequest>(&a).await), "402");
    // The docs' exact 6.2 request body: 402.
    let docs = r#"{"request":{"mchId":"101510000001","msgId":"1861611528197906432","originalMsgId":"S110202411271861610566972481536","service":"unified.repayment.query"},"signature":"H0RxyKmQnMkCVR5BJlCWngENSnBi4lBFOj5ec0yduN3ztzMP11BGZ+mFmHPC4t4iACIYgBFf9aLweHlTT+Tvk/6TGOzK0Hovidu2Kv+DD6Kbghq3dsMZfVuKSOnPhdrpgTvFwDANSG3ADmqOxMTGF5Aj0d8KQaKnFi8p3Lov1KBW26O4XzoOm+VQCQUccdhmlefA1TxPIeCvQ5d4WG9Vddy2ZBFx9UDpq86ThffVDYtMrRzCMIR7hSMa8dyZyNnzkMAh5Cw9j6aaNmciKNl8Sgpb6SFweky7KvVJoqyKiSk1Nmn66jNNoUqCGvAvznCwnx7Svm74Td9kt9yxYJ8GlQ=="}"#;
    let (status, body) = raw_post(&format!("{}/v1/repayment/query", h.base_url()), docs).await;
    assert_eq!(status, 200);
    let answer = c
        .verify_answer::<QueryResponse>("6.2", status, body)
        .unwrap();
    assert_eq!(answer.response.code.as_str(), "402");
    let _ = key;
    h.shutdown().await;
}

#[tokio::test]
async fn lenient_mode_accepts_reserialized_requests() {
    let mut cfg = config();
    cfg.lenient_signatures = true;
    let (h, c) = start(cfg).await;
    let original = c.sign(&balance_req("LEN1")).await.unwrap();
    let spaced = String::from_utf8(original.bytes.clone())
        .unwrap()
        .replace("\",\"", "\", \"");
    let s = SignedRequest {
        bytes: spaced.into_bytes(),
        signature: original.signature.clone(),
    };
    assert_eq!(code(&c.send::<DisburseBalanceRequest>(&s).await), "200");
    h.shutdown().await;
}

#[tokio::test]
async fn balances_move_and_overdraft_fails_am04() {
    let (h, c) = start(config()).await;
    h.set_balances(DEMO, Some(Centavos::new(100_000)), None)
        .unwrap();
    let bal = |r: Result<Answer<BalanceResponse>, ClientError>| {
        r.unwrap().response.balance.unwrap().get()
    };
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA0")).await),
        100_000
    );
    let ok = c
        .disburse_instapay(&payout(DEMO, "BP1", "1111", 60_000))
        .await
        .unwrap()
        .response;
    assert_eq!(ok.trx_state, Some(TrxState::Processing));
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA1")).await),
        40_000
    );
    // Above the available balance: accepted and immediately FAIL with AM04.
    let over = c
        .disburse_instapay(&payout(DEMO, "BP2", "2222", 50_000))
        .await
        .unwrap()
        .response;
    assert_eq!(over.code.as_str(), "200");
    assert_eq!(over.trx_state, Some(TrxState::Fail));
    assert_eq!(over.error_code.as_deref(), Some("AM04"));
    assert_eq!(over.error_message.as_deref(), Some("Insufficient Funds"));
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA2")).await),
        40_000
    );
    // FAIL refunds, REVERSED refunds.
    c.disburse_instapay(&payout(DEMO, "BP3", "3330401", 10_000))
        .await
        .unwrap();
    c.disburse_instapay(&payout(DEMO, "BP4", "4440700", 20_000))
        .await
        .unwrap();
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA3")).await),
        10_000
    );
    h.advance(5);
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA4")).await),
        20_000
    );
    h.advance(120);
    assert_eq!(
        bal(c.disbursement_balance(&balance_req("BA5")).await),
        40_000
    );
    let l = h.ledger();
    assert_eq!(l.order("BP1").unwrap().state, "SUCCESS");
    assert_eq!(l.order("BP3").unwrap().state, "FAIL");
    assert_eq!(l.order("BP4").unwrap().state, "REVERSED");
    assert_eq!(l.balances[DEMO].disbursement, 40_000);
    h.shutdown().await;
}

#[tokio::test]
async fn scenario_table() {
    let (h, c) = start(config()).await;
    for (id, acct) in [
        ("S1", "10401"),
        ("S2", "10404"),
        ("S3", "10504"),
        ("S4", "10505"),
        ("S5", "10700"),
        ("S6", "10999"),
        ("S7", "11234"),
    ] {
        assert_eq!(
            code(&c.disburse_instapay(&payout(DEMO, id, acct, 100)).await),
            "200"
        );
    }
    h.advance(5);
    let q = |id: &'static str, n: u32| {
        let c = c.clone();
        async move {
            c.query_disbursement(&query(&format!("Q{id}x{n}"), id))
                .await
                .unwrap()
                .response
        }
    };
    let s1 = q("S1", 1).await;
    assert_eq!(
        (s1.trx_state, s1.error_code.as_deref()),
        (Some(TrxState::Fail), Some("AC01"))
    );
    let s2 = q("S2", 1).await;
    assert_eq!(
        (s2.trx_state, s2.error_code.as_deref()),
        (Some(TrxState::Fail), Some("AC04"))
    );
    for id in ["S3", "S4"] {
        let r = q(id, 1).await;
        assert_eq!(
            (r.trx_state, r.error_code.as_deref()),
            (Some(TrxState::Processing), Some("AB05"))
        );
    }
    assert_eq!(q("S5", 1).await.trx_state, Some(TrxState::Success));
    assert_eq!(q("S7", 1).await.trx_state, Some(TrxState::Success));
    h.advance(120);
    let s3 = q("S3", 2).await;
    assert_eq!(
        (s3.trx_state, s3.error_code),
        (Some(TrxState::Success), None)
    );
    let s4 = q("S4", 2).await;
    assert_eq!(
        (s4.trx_state, s4.error_code.as_deref()),
        (Some(TrxState::Fail), Some("AB05"))
    );
    let s5 = q("S5", 2).await;
    assert_eq!(s5.trx_state, Some(TrxState::Reversed));
    h.advance(100_000);
    assert_eq!(q("S6", 2).await.trx_state, Some(TrxState::Processing));
    h.shutdown().await;
}

#[tokio::test]
async fn repayment_side() {
    let (h, c) = start(config()).await;
    let mch = MchId::new(DEMO).unwrap();
    let dyn_req = |id: &str| RepaymentRequest {
        msg_id: msg(id),
        mch_id: mch.clone(),
        notify_url: "http://127.0.0.1:9/notify".into(),
        device_info: "POS1".into(),
        trx_amount: Centavos::new(10_000),
        currency: Currency::Php,
        attach: None,
        time_start: None,
        time_expire: None,
        display_name: Some("Shop".into()),
    };
    let a = c.create_repayment(&dyn_req("D1")).await.unwrap().response;
    assert_eq!(a.trx_state, Some(TrxState::Processing));
    assert!(a.code_url.is_some());
    c.create_repayment(&dyn_req("D2")).await.unwrap();
    c.create_repayment(&dyn_req("D3")).await.unwrap();
    // A simulated payer pays D1.
    h.pay_dynamic_qr(a.order_no.as_deref().unwrap()).unwrap();
    let rq = |id: &str, orig: &str| RepaymentQueryRequest {
        msg_id: msg(id),
        mch_id: mch.clone(),
        original_msg_id: msg(orig),
    };
    let paid = c.query_repayment(&rq("RQ1", "D1")).await.unwrap().response;
    assert_eq!(paid.trx_state, Some(TrxState::Success));
    let ref_no = paid.ref_no.clone().unwrap();
    // 6.9 cancel D2; cancelling paid D1 answers its current state.
    let cancel = |id: &str, orig: &str| RepaymentCancelRequest {
        msg_id: msg(id),
        mch_id: mch.clone(),
        original_msg_id: msg(orig),
    };
    assert_eq!(
        c.cancel_repayment(&cancel("C1", "D2"))
            .await
            .unwrap()
            .response
            .trx_state,
        Some(TrxState::Cancel)
    );
    assert_eq!(
        c.cancel_repayment(&cancel("C2", "D1"))
            .await
            .unwrap()
            .response
            .trx_state,
        Some(TrxState::Success)
    );
    assert_eq!(
        code(&c.cancel_repayment(&cancel("C3", "NOPE")).await),
        "404"
    );
    // D3 expires after 15 minutes.
    h.advance(901);
    assert_eq!(
        c.query_repayment(&rq("RQ2", "D3"))
            .await
            .unwrap()
            .response
            .trx_state,
        Some(TrxState::Close)
    );
    // A payout msgId is not a repayment.
    c.disburse_instapay(&payout(DEMO, "PX", "1234", 100))
        .await
        .unwrap();
    assert_eq!(code(&c.query_repayment(&rq("RQ3", "PX")).await), "404");
    // 6.8 by refNo.
    let by_ref = c
        .query_repayment_by_ref_no(&RefNoQueryRequest {
            msg_id: msg("RF1"),
            mch_id: mch.clone(),
            ref_no: ref_no.clone(),
        })
        .await
        .unwrap()
        .response;
    assert_eq!(by_ref.original_msg_id.as_deref(), Some("D1"));
    assert_eq!(
        code(
            &c.query_repayment_by_ref_no(&RefNoQueryRequest {
                msg_id: msg("RF2"),
                mch_id: mch.clone(),
                ref_no: "0".into()
            })
            .await
        ),
        "404"
    );
    // 6.4 static QR, paid twice by payers; 6.7 disable.
    let sq = StaticQrRequest {
        msg_id: msg("SQ1"),
        mch_id: mch.clone(),
        device_info: "8CYGISAS".into(),
        display_name: "Canteen".into(),
        notify_url: "http://127.0.0.1:9/n".into(),
    };
    let s1 = c.generate_static_qr(&sq).await.unwrap().response;
    let mut sq2 = sq.clone();
    sq2.msg_id = msg("SQ2");
    assert_eq!(
        c.generate_static_qr(&sq2).await.unwrap().response.code_url,
        s1.code_url
    );
    let p1 = h
        .pay_static_qr(DEMO, "8CYGISAS", Centavos::new(500))
        .unwrap();
    h.pay_static_qr(DEMO, "8CYGISAS", Centavos::new(700))
        .unwrap();
    let sp = c.query_repayment(&rq("RQ4", &p1)).await.unwrap().response;
    assert_eq!(
        (sp.trx_state, sp.trx_amount),
        (Some(TrxState::Success), Some(Centavos::new(500)))
    );
    let st = |id: &str, dev: &str, s: QrStatus| StaticQrStatusRequest {
        msg_id: msg(id),
        mch_id: mch.clone(),
        device_info: dev.into(),
        qr_status: s,
    };
    assert_eq!(
        c.set_static_qr_status(&st("ST1", "8CYGISAS", QrStatus::Disable))
            .await
            .unwrap()
            .response
            .qr_status,
        Some(QrStatus::Disable)
    );
    assert!(h.pay_static_qr(DEMO, "8CYGISAS", Centavos::new(1)).is_err());
    assert_eq!(
        code(
            &c.set_static_qr_status(&st("ST2", "UNKNOWN", QrStatus::Enable))
                .await
        ),
        "404"
    );
    // 6.6 balance: 10,000 + 500 + 700.
    let bal = c
        .repayment_balance(&RepaymentBalanceRequest {
            msg_id: msg("RB1"),
            mch_id: mch.clone(),
        })
        .await
        .unwrap()
        .response;
    assert_eq!(bal.balance, Some(Centavos::new(11_200)));
    h.shutdown().await;
}

#[tokio::test]
async fn bank_list_scan_and_qr_payouts() {
    let (h, c) = start(config()).await;
    let mch = MchId::new(DEMO).unwrap();
    let banks = c
        .bank_list(&BankListRequest {
            msg_id: msg("BL1"),
            mch_id: mch.clone(),
        })
        .await
        .unwrap()
        .response
        .banks
        .unwrap();
    assert!(banks.len() >= 20);
    for name in [
        "Sun Savings Bank, Inc.",
        "GCash",
        "Maya",
        "BDO Unibank, Inc.",
    ] {
        assert!(banks.iter().any(|b| b.bank_name == name), "{name}");
    }
    let scan = c
        .scan_qr(&ScanQrRequest {
            msg_id: msg("SC1"),
            mch_id: mch.clone(),
            qr_code: "SIM-P2M-0001".into(),
        })
        .await
        .unwrap()
        .response;
    assert_eq!(scan.qr_type.as_deref(), Some("P2M"));
    assert_eq!(
        code(
            &c.scan_qr(&ScanQrRequest {
                msg_id: msg("SC2"),
                mch_id: mch.clone(),
                qr_code: "???".into()
            })
            .await
        ),
        "412"
    );
    let p2m = QrP2mDisburseRequest {
        msg_id: msg("QP1"),
        mch_id: mch.clone(),
        qr_code: "SIM-P2M-0001".into(),
        trx_amount: Centavos::new(1_000),
        currency: Currency::Php,
        attach: None,
        notify_url: None,
    };
    assert_eq!(
        c.disburse_qr_p2m(&p2m).await.unwrap().response.trx_state,
        Some(TrxState::Processing)
    );
    let p2p = QrP2pDisburseRequest {
        msg_id: msg("QP2"),
        mch_id: mch.clone(),
        qr_code: "SIM-P2M-0001".into(),
        trx_amount: Centavos::new(1_000),
        currency: Currency::Php,
        attach: None,
        notify_url: None,
    };
    assert_eq!(code(&c.disburse_qr_p2p(&p2p).await), "412");
    h.advance(5);
    assert_eq!(
        c.query_disbursement(&query("QQ1", "QP1"))
            .await
            .unwrap()
            .response
            .trx_state,
        Some(TrxState::Success)
    );
    let _ = known::DEMO_MCH_ID;
    h.shutdown().await;
}

#[tokio::test]
async fn admin_routes_over_http() {
    let (h, c) = start(config()).await;
    c.disburse_instapay(&payout(DEMO, "AD1", "1234", 100))
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let root = format!("http://{}", h.addr());
    let ledger: starpay_batch::server::sim::LedgerSnapshot = serde_json::from_slice(
        &http
            .get(format!("{root}/_sim/ledger"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ledger.orders[0].msg_id, "AD1");
    assert_eq!(ledger.orders[0].create_requests, 1);
    let raw: Value = serde_json::from_slice(
        &http
            .get(format!("{root}/_sim/ledger"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    for k in [
        "msgId",
        "orderNo",
        "service",
        "mchId",
        "acctNo",
        "trxAmount",
        "state",
        "createRequests",
    ] {
        assert!(raw["orders"][0].get(k).is_some(), "{k}");
    }
    let order_no = ledger.orders[0].order_no.clone();
    let r = http
        .post(format!(
            "{root}/_sim/force?orderNo={order_no}&state=FAIL&errorCode=AC03"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.ledger().order("AD1").unwrap().state, "FAIL");
    let r = http
        .post(format!("{root}/_sim/advance?secs=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.now_ms() >= 10_000);
    let reqs: Vec<starpay_batch::server::sim::RequestRecord> = serde_json::from_slice(
        &http
            .get(format!("{root}/_sim/requests"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].service.as_deref(),
        Some("pay.starpay.instapay.disburse")
    );
    let r = http
        .post(format!(
            "{root}/_sim/merchant-status?mchId={DEMO}&status=SUSPENDED"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        code(&c.disbursement_balance(&balance_req("AD2")).await),
        "414"
    );
    let r = http
        .post(format!("{root}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(h.ledger().orders.is_empty());
    assert_eq!(
        code(&c.disbursement_balance(&balance_req("AD2")).await),
        "200"
    );
    let r = http
        .post(format!("{root}/_sim/faults"))
        .body(r#"{"http_502": 1.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(matches!(
        c.disbursement_balance(&balance_req("AD3")).await,
        Err(ClientError::NotEnvelope { status: 502, .. })
    ));
    let r = http
        .post(format!("{root}/_sim/faults"))
        .body(r#"{"bogus": 1.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    h.shutdown().await;
}
