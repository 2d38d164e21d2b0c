//! Simulator fault tests: commit-then-drop, 502, hang, signature faults, query lag, resets,
//! latency, and seeded determinism (reference §11 "Seeded fault injection").

mod sim_common;

use std::time::{Duration, Instant};

use sim_common::*;
use starpay_batch::domain::TrxState;
use starpay_batch::server::sim::{FaultConfig, SimConfig};
use starpay_batch::starpay::client::{ClientError, Outcome};
use starpay_batch::starpay::sign::VerifyError;

#[tokio::test]
async fn commit_then_drop_by_suffix_and_by_fault() {
    let (h, c) = start(config()).await;
    let err = c
        .disburse_instapay(&payout(DEMO, "CD1", "9990800", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert_eq!(err.outcome(), Outcome::Unknown);
    let order = h.ledger().order("CD1").cloned().unwrap();
    assert_eq!(order.state, "PROCESSING");
    let q = c
        .query_disbursement(&query("CDQ1", "CD1"))
        .await
        .unwrap()
        .response;
    assert_eq!(q.order_no.as_deref(), Some(order.order_no.as_str()));
    // The resend of the same msgId is answered normally (403: query it).
    let again = c
        .disburse_instapay(&payout(DEMO, "CD1", "9990800", 100))
        .await
        .unwrap();
    assert_eq!(again.response.code.as_str(), "403");
    h.set_faults(FaultConfig {
        commit_then_drop: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    let err = c
        .disburse_instapay(&payout(DEMO, "CD2", "1234", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(h.ledger().order("CD2").is_some());
    let rec = h
        .requests()
        .into_iter()
        .find(|r| r.msg_id.as_deref() == Some("CD2"))
        .unwrap();
    assert_eq!(
        (rec.http_status, rec.fault.as_deref()),
        (None, Some("commit_then_drop"))
    );
    // Queries are not creates: never dropped by this fault.
    assert!(c.query_disbursement(&query("CDQ2", "CD2")).await.is_ok());
    h.shutdown().await;
}

#[tokio::test]
async fn reset_502_and_hang() {
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        reset_before: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    let err = c
        .disburse_instapay(&payout(DEMO, "RB1", "1234", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
    assert!(h.ledger().orders.is_empty());
    h.set_faults(FaultConfig {
        http_502: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    let err = c
        .disburse_instapay(&payout(DEMO, "RB1", "1234", 100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::NotEnvelope { status: 502, .. }),
        "{err:?}"
    );
    assert!(h.ledger().orders.is_empty());
    h.set_faults(FaultConfig {
        hang: 1.0,
        hang_secs: 3,
        ..FaultConfig::default()
    })
    .unwrap();
    let impatient = client_with(&h, DEMO, demo_key(), Duration::from_millis(300));
    let err = impatient
        .disburse_instapay(&payout(DEMO, "RB1", "1234", 100))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    // Processed before hanging: the order exists.
    assert!(h.ledger().order("RB1").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn signature_faults_and_string_responses() {
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        bad_signature: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    match c
        .disbursement_balance(&balance_req("SG1"))
        .await
        .unwrap_err()
    {
        ClientError::Unverified { code, error, .. } => {
            assert_eq!(code.map(|c| c.as_str().to_string()).as_deref(), Some("200"));
            assert_eq!(error, VerifyError::Mismatch);
        }
        other => panic!("{other:?}"),
    }
    h.set_faults(FaultConfig {
        unsigned: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    match c
        .disbursement_balance(&balance_req("SG2"))
        .await
        .unwrap_err()
    {
        ClientError::Unverified { error, .. } => assert_eq!(error, VerifyError::MissingSignature),
        other => panic!("{other:?}"),
    }
    h.set_faults(FaultConfig {
        response_as_string: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    let a = c.disbursement_balance(&balance_req("SG3")).await.unwrap();
    assert!(
        a.raw_body.starts_with(b"{\"response\":\"{"),
        "{:?}",
        a.raw_body
    );
    assert_eq!(a.response.code.as_str(), "200");
    h.shutdown().await;

    let cfg = SimConfig {
        response_as_string: true,
        ..config()
    };
    let (h, c) = start(cfg).await;
    assert!(c.disbursement_balance(&balance_req("SG4")).await.is_ok());
    h.shutdown().await;
}

/// `echo_wrong_msg_id` / `echo_wrong_amount`: the answer verifies with the platform key, but
/// it names another msgId (and originalMsgId) or an amount one centavo off. `faults_on
/// = payouts` leaves the balance (5.6) answer alone.
#[tokio::test]
async fn validly_signed_answers_with_a_wrong_echo() {
    use starpay_batch::domain::Centavos;
    use starpay_batch::server::sim::FaultScope;
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        echo_wrong_msg_id: 1.0,
        faults_on: FaultScope::Payouts,
        ..FaultConfig::default()
    })
    .unwrap();
    // Verified (the client checks the platform signature), yet about another msgId.
    let a = c
        .disburse_instapay(&payout(DEMO, "EW1", "1234", 150))
        .await
        .unwrap();
    let echoed = a.response.msg_id.clone().unwrap();
    assert_ne!(echoed, "EW1");
    assert_eq!(echoed.len(), 3);
    assert!(
        h.ledger().order("EW1").is_some(),
        "the payout itself was processed"
    );
    let q = c.query_disbursement(&query("EWQ1", "EW1")).await.unwrap();
    assert_ne!(q.response.msg_id.as_deref(), Some("EWQ1"));
    assert_ne!(q.response.original_msg_id.as_deref(), Some("EW1"));
    assert!(q.response.original_msg_id.is_some());
    let rec = h
        .requests()
        .into_iter()
        .find(|r| r.msg_id.as_deref() == Some("EWQ1"))
        .unwrap();
    assert_eq!(rec.fault.as_deref(), Some("echo_wrong_msg_id"));
    // Out of scope: the balance answer is untouched.
    let b = c.disbursement_balance(&balance_req("EWB1")).await.unwrap();
    assert_eq!(b.response.msg_id.as_deref(), Some("EWB1"));

    h.set_faults(FaultConfig {
        echo_wrong_amount: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    h.advance(5);
    let q = c.query_disbursement(&query("EWQ2", "EW1")).await.unwrap();
    assert_eq!(q.response.msg_id.as_deref(), Some("EWQ2"));
    assert_eq!(q.response.original_msg_id.as_deref(), Some("EW1"));
    assert_eq!(q.response.trx_amount, Some(Centavos::new(151)));
    assert_eq!(h.ledger().order("EW1").unwrap().trx_amount, 150);
    let a = c
        .disburse_instapay(&payout(DEMO, "EW2", "1234", 200))
        .await
        .unwrap();
    assert_eq!(a.response.msg_id.as_deref(), Some("EW2"));
    if let Some(amount) = a.response.trx_amount {
        assert_eq!(amount, Centavos::new(201));
    }
    // Seeded like every other fault: half of the answers, the same ones for the same seed.
    h.set_faults(FaultConfig {
        echo_wrong_msg_id: 0.5,
        ..FaultConfig::default()
    })
    .unwrap();
    let mut hits = 0;
    for i in 0..20 {
        let id = format!("EWB{i}X");
        let b = c.disbursement_balance(&balance_req(&id)).await.unwrap();
        if b.response.msg_id.as_deref() != Some(id.as_str()) {
            hits += 1;
        }
    }
    assert!((3..=17).contains(&hits), "{hits} of 20");
    h.shutdown().await;
}

#[tokio::test]
async fn query_lag_answers_404_for_a_while() {
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        query_lag: 1.0,
        query_lag_secs: 30,
        ..FaultConfig::default()
    })
    .unwrap();
    c.disburse_instapay(&payout(DEMO, "QL1", "1234", 100))
        .await
        .unwrap();
    let r = c.query_disbursement(&query("QLQ1", "QL1")).await.unwrap();
    assert_eq!(r.response.code.as_str(), "404");
    h.advance(31);
    let r = c.query_disbursement(&query("QLQ2", "QL1")).await.unwrap();
    assert_eq!(r.response.trx_state, Some(TrxState::Success));
    h.shutdown().await;
}

#[tokio::test]
async fn fixed_latency_delays_answers() {
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        latency_ms: 250,
        ..FaultConfig::default()
    })
    .unwrap();
    let t = Instant::now();
    c.disbursement_balance(&balance_req("LT1")).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
    h.shutdown().await;
}

/// Outcome of 16 payouts under random faults: the answer (or "drop") and the state settled.
async fn run_with_seed(seed: u64) -> Vec<String> {
    let cfg = SimConfig {
        seed,
        settle_jitter_ms: 900,
        faults: FaultConfig {
            payout_fail: 0.5,
            commit_then_drop: 0.3,
            ..FaultConfig::default()
        },
        ..config()
    };
    let (h, c) = start(cfg).await;
    let mut out = Vec::new();
    for i in 0..16 {
        let id = format!("DET{i}");
        let answer = match c
            .disburse_instapay(&payout(DEMO, &id, &format!("77{i:04}"), 100))
            .await
        {
            Ok(a) => a.response.code.as_str().to_string(),
            Err(ClientError::Transport(_)) => "drop".into(),
            Err(e) => panic!("{e}"),
        };
        out.push(answer);
    }
    h.advance(10);
    let ledger = h.ledger();
    for i in 0..16 {
        let o = ledger.order(&format!("DET{i}")).unwrap();
        out.push(format!(
            "{}:{}",
            o.state,
            o.error_code.clone().unwrap_or_default()
        ));
    }
    h.shutdown().await;
    out
}

#[tokio::test]
async fn same_seed_same_outcomes_other_seed_differs() {
    let a = run_with_seed(1).await;
    let b = run_with_seed(1).await;
    let c = run_with_seed(2).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().any(|s| s == "drop"), "{a:?}");
    assert!(a.iter().any(|s| s.starts_with("FAIL:")), "{a:?}");
    assert!(a.iter().any(|s| s.starts_with("SUCCESS:")), "{a:?}");
}
