//! The HTML summary (issue 13, acceptance 2): written beside the CSV report for a payout run
//! and a reconcile pass; its totals equal the report's; a beneficiary name holding `<script>`
//! and quotes is shown escaped; no external URL, script, font or image. The real binary, the
//! real simulator over 127.0.0.1, real SQLite.

mod payout_common;

use std::collections::HashMap;
use std::path::Path;

use payout_common::*;

const LIMITS: &str = "requests_per_second = 400\nburst = 100\nconcurrency = 8\nrequest_timeout_secs = 5\nconnect_timeout_secs = 2";

/// The page's totals table: label → (count, centavos), TOTAL included. Each line is
/// `<tr data-state="X">…<td class="n count">N</td><td class="n amount">A</td></tr>` or the
/// TOTAL line.
fn page_totals(html: &str) -> HashMap<String, (u64, i64)> {
    let table = &html[html.find(r#"<table id="totals">"#).expect("totals table")..];
    let table = &table[..table.find("</table>").unwrap()];
    let mut out = HashMap::new();
    for tr in table.split("<tr").skip(1) {
        let label = match tr.split_once(r#"data-state=""#) {
            Some((_, rest)) => rest.split('"').next().unwrap().to_string(),
            None if tr.contains("TOTAL") => "TOTAL".to_string(),
            None => continue,
        };
        let cell = |class: &str| {
            let open = format!(r#"class="n {class}">"#);
            let rest =
                &tr[tr.find(&open).unwrap_or_else(|| panic!("{class} in {tr}")) + open.len()..];
            rest[..rest.find('<').unwrap()].to_string()
        };
        out.insert(
            label,
            (cell("count").parse().unwrap(), centavos(&cell("amount"))),
        );
    }
    out
}

/// The summary CSV's table up to and including its TOTAL line (a reconciliation's lines after
/// it count notifications, not lines of the file, and are not in the page's totals table).
fn summary_with_total(path: &Path) -> HashMap<String, (u64, i64)> {
    let rows = read_report(path);
    let end = rows
        .iter()
        .position(|r| {
            r.get("state")
                .or_else(|| r.get("category"))
                .map(String::as_str)
                == Some("TOTAL")
        })
        .map_or(rows.len(), |i| i + 1);
    rows.into_iter()
        .take(end)
        .map(|r| {
            let amount = r.get("total").or_else(|| r.get("amount")).unwrap().clone();
            let label = r
                .get("state")
                .or_else(|| r.get("category"))
                .unwrap()
                .clone();
            (label, (r["count"].parse().unwrap(), centavos(&amount)))
        })
        .collect()
}

fn assert_self_contained(html: &str) {
    for external in [
        "http:",
        "https:",
        "src=",
        "href=",
        "url(",
        "@import",
        "<link",
        "<img",
        "<script",
        "@font-face",
    ] {
        assert!(
            !html.contains(external),
            "{external:?} in the page:\n{html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_page_totals_escaping_and_no_external_urls() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(fast_sim_config(21)).await;
    let input = dir.path().join("payouts.csv");
    // Row 3 fails (account suffix 0401) and its beneficiary's names are hostile input.
    std::fs::write(
        &input,
        format!(
            "{CSV_HEADER}\
H-1,instapay,0000011234,Juan,Santos,Dela Cruz,GCash,100.00,PHP,a\n\
H-2,starpay,09170002234,Maria,,Reyes,,2500.50,PHP,b\n\
H-3,instapay,0000030401,\"<script>alert(\"\"x\"\")</script>\",,\"O'Neil \"\"Jr\"\"\",GCash,\"1,000.25\",PHP,c\n"
        ),
    )
    .unwrap();
    let job = write_job(dir.path(), "payroll", &sim, &input, LIMITS, FAST_RESOLVE);
    let out = run(vec!["run".into(), s(&job)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let reports = dir.path().join("reports");
    let page_path = reports.join("payroll-1-summary.html");
    assert!(
        show(&out).contains(&s(&page_path)),
        "the page is named with the report:\n{}",
        show(&out)
    );
    let html = std::fs::read_to_string(&page_path).unwrap();

    // Totals per state and TOTAL equal the summary CSV's (which equal the report's lines).
    let csv = summary_with_total(&reports.join("payroll-1-summary.csv"));
    let page = page_totals(&html);
    assert_eq!(page, csv, "page totals vs summary CSV");
    assert_eq!(page["SUCCESS"], (2, 260_050));
    assert_eq!(page["FAILED"], (1, 100_025));
    let report = read_report(&reports.join("payroll-1.csv"));
    let report_total: i64 = report.iter().map(|r| centavos(&r["amount"])).sum();
    assert_eq!(page["TOTAL"], (report.len() as u64, report_total));

    // The hostile name is shown, escaped; the failed row needs action with a masked account.
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; O'Neil &quot;Jr&quot;"),
        "{html}"
    );
    assert!(html.contains("******0401"), "masked account");
    assert!(
        !html.contains("0000030401"),
        "never the full account number"
    );
    assert!(html.contains("AC01"), "the failure's reason");
    assert!(html.contains("<svg"), "the chart");
    assert!(html.contains("@media print"), "print CSS");
    assert!(
        html.contains("before (pre-flight, 5.6)") && html.contains("after (expected)"),
        "the balance before and after: {html}"
    );
    assert_self_contained(&html);

    // A reconcile pass over the run gets its page too, with the same totals as its CSV.
    let out = run(vec![
        "reconcile".into(),
        s(&job),
        "--run".into(),
        "1".into(),
    ])
    .await;
    assert!(matches!(out.status.code(), Some(0 | 2)), "{}", show(&out));
    let recon_page = std::fs::read_to_string(reports.join("payroll-reconcile-1-2-summary.html"))
        .unwrap_or_else(|e| panic!("{e}\n{}", show(&out)));
    let csv = summary_with_total(&reports.join("payroll-reconcile-1-2-summary.csv"));
    assert_eq!(page_totals(&recon_page), csv);
    assert_self_contained(&recon_page);
    // The payout run's page was rewritten with its report, still self-contained.
    assert_self_contained(&std::fs::read_to_string(&page_path).unwrap());
}
