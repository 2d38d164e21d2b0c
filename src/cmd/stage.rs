//! `stage JOB --input F --by NAME` (issue 13): records who prepared a payout file (its
//! SHA-256, count and total) in the approval log, after validating it offline as `run` does.
//! Sends nothing. Under `[approval] four_eyes` the approver must be someone else.

use crate::cli::StageArgs;
use crate::cmd::approve::{open_payout_file, validate_offline};
use crate::cmd::exit;
use crate::engine::approval;
use crate::store::approvals::{ApprovalAction, NewApprovalEntry};

pub fn run(args: StageArgs) -> anyhow::Result<i32> {
    let by = approval::check_name("--by", &args.by).map_err(anyhow::Error::msg)?;
    let ctx = open_payout_file(&args.job, args.input.clone(), "stage")?;
    ctx.block_on(async {
        let cfg = &ctx.cfg;
        let Some((_, figures)) = validate_offline(&ctx).await? else {
            return Ok(exit::COULD_NOT_RUN);
        };
        print!("{}", figures.to_text());
        for b in approval::breaches(&figures, &cfg.spending) {
            println!("over cap: {b} (the approver must pass --over-limits)");
        }
        let e = ctx
            .store()
            .record_approval(NewApprovalEntry {
                job: cfg.job_name.clone(),
                action: ApprovalAction::Staged,
                by: by.clone(),
                input_path: cfg.input.display().to_string(),
                input_sha256: figures.sha256.clone(),
                rows: figures.rows as i64,
                total: figures.total,
                prepared_by: None,
                overrides: Vec::new(),
                revokes: None,
            })
            .await?;
        println!(
            "\nstaged by {by} at {}; next: `starpay-batch approve {} --input {} --by NAME`{}",
            crate::report::ts(Some(e.at), cfg.report.timezone),
            args.job.display(),
            cfg.input.display(),
            if cfg.approval.four_eyes {
                " (someone other than the preparer: four eyes)"
            } else {
                ""
            }
        );
        Ok(exit::OK)
    })
}
