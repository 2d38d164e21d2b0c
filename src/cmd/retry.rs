//! `retry JOB --run ID`: sends the FAILED rows of a payout run again under new msgIds (each
//! checked live against every earlier attempt of its reference first), queries the rows still
//! pending, and rewrites the run's report. Which rows go is `engine::prepare::retry_plan`.

use crate::cli::RetryArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::drive::{drive_and_report, Work};
use crate::cmd::report::find_run;
use crate::engine::payout::Allocated;
use crate::engine::prepare;
use crate::store::ReferenceCheck;

pub fn run(args: RetryArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::Exclusive)?;
    ctx.require_payout(&args.job, "retry")?;
    ctx.block_on(async {
        let store = ctx.store();
        let run_id = args.run;
        find_run(&ctx, run_id).await?;
        let (engine, _sim) = ctx.payout_engine().await?;
        let rows = store.rows_of_run(run_id, false).await?;
        let plan = prepare::retry_plan(rows, args.include_beneficiary_errors)?;
        for r in &plan.skipped {
            crate::say_warn!(
                "line {}: FAILED with {} ({}): not re-sent; fix the beneficiary data and pay it in a new file, or pass --include-beneficiary-errors",
                r.line,
                r.error_code.as_deref().unwrap_or(""),
                r.error_message.as_deref().unwrap_or("")
            );
        }
        if plan.total.is_positive() {
            prepare::check_balance("retry", plan.total, engine.balance().await?)?;
        }
        // Reopen before allocating: a crash in between leaves an open run that resumes.
        let why = format!("retry of {} FAILED row(s)", plan.retryable.len());
        store.reopen_run(run_id, why).await?;
        let mut resent = 0;
        for mut row in plan.retryable {
            let uses = store.reference_uses(&row.reference, Some(row.id)).await?;
            if let Some(reason) = ReferenceCheck::of(&uses).refusal(&row.reference, true) {
                crate::say_warn!("line {}: not re-sent: {reason}", row.line);
                continue;
            }
            match engine.allocate(&mut row).await {
                Ok(Allocated::Yes) => resent += 1,
                Ok(Allocated::Refused) | Ok(Allocated::TryLater) => crate::say_warn!(
                    "line {}: not re-sent: {}",
                    row.line,
                    row.message.as_deref().unwrap_or("")
                ),
                // The row stays FAILED (nothing was sent for it); the report still comes.
                Err(e) => crate::say_warn!("line {}: not re-sent: {e}", row.line),
            }
        }
        crate::say!("retry of run {run_id}: {resent} FAILED row(s) get a new msgId; pending and unknown rows are queried");
        drive_and_report(&ctx, Work::Payout(engine), run_id).await
    })
}
