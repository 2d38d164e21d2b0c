//! Simulator notification tests (reference §10): signed bodies that verify with the client's
//! verifier, retries on failure in simulated time, duplicates, reordering, loss, and the
//! loopback-only rule.

mod sim_common;

use sim_common::*;
use starpay_batch::domain::{Centavos, TrxState};
use starpay_batch::server::sim::{FaultConfig, MerchantConfig, SimConfig};
use starpay_batch::starpay::client::verify_notification;
use starpay_batch::starpay::model::Notification;

fn decode(h: &starpay_batch::server::sim::SimHandle, bodies: &[bytes::Bytes]) -> Vec<Notification> {
    bodies
        .iter()
        .flat_map(|b| verify_notification(b, &[h.platform_public_key()]).unwrap())
        .collect()
}

fn with_notify(
    mut p: starpay_batch::starpay::model::InstapayDisburseRequest,
    url: &str,
) -> starpay_batch::starpay::model::InstapayDisburseRequest {
    p.notify_url = Some(url.to_string());
    p
}

#[tokio::test]
async fn final_states_are_notified_and_verify() {
    let rx = Receiver::start(0).await;
    let (h, c) = start(config()).await;
    c.disburse_instapay(&with_notify(payout(DEMO, "N1", "1234", 100), &rx.url))
        .await
        .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "N2", "10401", 200), &rx.url))
        .await
        .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "N3", "10700", 300), &rx.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("3 notifications", || rx.count() >= 3).await;
    let n = decode(&h, &rx.all());
    let find = |id: &str, s: TrxState| {
        n.iter()
            .find(|x| x.original_msg_id == id && x.trx_state == s)
            .cloned()
    };
    let n1 = find("N1", TrxState::Success).unwrap();
    assert_eq!(n1.trx_amount, Centavos::new(100));
    assert_eq!(n1.mch_id, DEMO);
    assert_eq!(n1.ref_no.as_ref().map(String::len), Some(16));
    let n2 = find("N2", TrxState::Fail).unwrap();
    assert_eq!(n2.error_code.as_deref(), Some("AC01"));
    assert!(find("N3", TrxState::Success).is_some());
    // The later REVERSED is notified too.
    h.advance(120);
    eventually("reversal notification", || rx.count() >= 4).await;
    let n = decode(&h, &rx.all());
    assert!(n
        .iter()
        .any(|x| x.original_msg_id == "N3" && x.trx_state == TrxState::Reversed));
    // Field order is the documented one.
    let text = String::from_utf8(rx.all()[0].to_vec()).unwrap();
    assert!(
        text.starts_with(r#"{"request":{"code":"200","message":"success","trxDate":"#),
        "{text}"
    );
    let ledger = h.ledger();
    assert!(ledger
        .order("N1")
        .unwrap()
        .notifications
        .iter()
        .any(|a| a.delivered));
    h.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_on_the_schedule() {
    let rx = Receiver::start(2).await;
    let (h, c) = start(config()).await;
    c.disburse_instapay(&with_notify(payout(DEMO, "RT1", "1234", 100), &rx.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("first attempt", || rx.count() == 1).await;
    // No sleep-then-assert: deliveries go out one at a time in due order, so once a marker
    // payout's notification (due now) has arrived, any retry due before it has been sent too.
    let marker = Receiver::start(0).await;
    c.disburse_instapay(&with_notify(payout(DEMO, "RTM1", "1234", 100), &marker.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("marker delivered", || marker.count() == 1).await;
    assert_eq!(rx.count(), 1, "the retry waits 15 simulated seconds");
    h.advance(15);
    eventually("second attempt", || rx.count() == 2).await;
    h.advance(60);
    eventually("third attempt", || rx.count() == 3).await;
    eventually("recorded as delivered", || {
        let l = h.ledger();
        let a = &l.order("RT1").unwrap().notifications;
        a.len() == 3 && a[2].delivered && !a[0].delivered
    })
    .await;
    h.advance(10_000);
    // A marker created now is due after anything the advance made due.
    c.disburse_instapay(&with_notify(payout(DEMO, "RTM2", "1234", 100), &marker.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("second marker delivered", || marker.count() == 2).await;
    assert_eq!(rx.count(), 3, "no delivery after a 200");
    assert_eq!(h.ledger().order("RT1").unwrap().notifications.len(), 3);
    h.shutdown().await;
}

#[tokio::test]
async fn duplicates_reordering_and_loss_when_configured() {
    let rx = Receiver::start(0).await;
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        notify_duplicate: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "DU1", "1234", 100), &rx.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("duplicate", || rx.count() == 2).await;
    let n = decode(&h, &rx.all());
    assert_eq!(n[0], n[1]);
    h.shutdown().await;

    let rx = Receiver::start(0).await;
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        notify_reorder: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "RO1", "1234", 100), &rx.url))
        .await
        .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "RO2", "1234", 100), &rx.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("both", || rx.count() == 2).await;
    let n = decode(&h, &rx.all());
    let order: Vec<&str> = n.iter().map(|x| x.original_msg_id.as_str()).collect();
    assert_eq!(
        order,
        ["RO2", "RO1"],
        "RO1 settled first but arrives second"
    );
    h.shutdown().await;

    let rx = Receiver::start(0).await;
    let (h, c) = start(config()).await;
    h.set_faults(FaultConfig {
        notify_lost: 1.0,
        ..FaultConfig::default()
    })
    .unwrap();
    c.disburse_instapay(&with_notify(payout(DEMO, "LO1", "1234", 100), &rx.url))
        .await
        .unwrap();
    h.advance(5);
    eventually("loss recorded", || {
        !h.ledger().order("LO1").unwrap().notifications.is_empty()
    })
    .await;
    assert_eq!(rx.count(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn merchant_default_url_repayments_and_loopback_only() {
    let rx = Receiver::start(0).await;
    let mut cfg = config();
    let mut m = MerchantConfig::demo(DEMO);
    m.notify_url = Some(rx.url.clone());
    cfg.merchants = vec![m];
    let (h, c) = start(cfg).await;
    // No notifyUrl on the request: the merchant's default URL is used.
    c.disburse_instapay(&payout(DEMO, "MD1", "1234", 100))
        .await
        .unwrap();
    // Refused: not a loopback URL (nothing is sent anywhere).
    c.disburse_instapay(&with_notify(
        payout(DEMO, "MD2", "1234", 100),
        "http://example.com/n",
    ))
    .await
    .unwrap();
    h.advance(5);
    eventually("default url", || rx.count() == 1).await;
    eventually("refusal recorded", || {
        h.ledger()
            .order("MD2")
            .unwrap()
            .notifications
            .iter()
            .any(|a| a.result.starts_with("refused"))
    })
    .await;
    // Static QR payment: 6.5 notification with deviceInfo.
    let sq = starpay_batch::starpay::model::StaticQrRequest {
        msg_id: msg("SQ1"),
        mch_id: starpay_batch::domain::MchId::new(DEMO).unwrap(),
        device_info: "DEV9".into(),
        display_name: "Shop".into(),
        notify_url: rx.url.clone(),
    };
    c.generate_static_qr(&sq).await.unwrap();
    let generated = h.pay_static_qr(DEMO, "DEV9", Centavos::new(900)).unwrap();
    eventually("static payment notification", || rx.count() == 2).await;
    let n = decode(&h, &rx.all());
    let s = n.iter().find(|x| x.original_msg_id == generated).unwrap();
    assert_eq!(s.device_info.as_deref(), Some("DEV9"));
    assert_eq!(s.trx_state, TrxState::Success);
    let _ = SimConfig::default();
    h.shutdown().await;
}
