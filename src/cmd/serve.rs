//! `serve JOB --listen ADDR`: the notification receiver on its own (`crate::receiver`), for the
//! merchant's public `notifyUrl` behind a reverse proxy, until a stop signal (exit 0).

use crate::cli::ServeArgs;
use crate::cmd::context::{Access, JobContext};
use crate::cmd::exit;

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let ctx = JobContext::open(&args.job, None, Access::Shared)?;
    ctx.block_on(async {
        let mut signals = crate::signals::StopSignals::listen()?;
        let running = ctx.start_receiver(args.listen, None).await?;
        println!("http://{}/", running.addr);
        crate::say!(
            "receiving notifications for job {:?} on http://{}/ (database {}); Ctrl-C stops",
            ctx.cfg.job_name,
            running.addr,
            ctx.cfg.database_shown()
        );
        let signal = signals.recv().await;
        crate::say!("{signal}: stopping the receiver");
        running.stop().await;
        Ok(exit::OK)
    })
}
