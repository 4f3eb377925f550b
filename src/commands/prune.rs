//! `worker prune --older-than SPAN`: retention (see `store::retention` for how,
//! and the README's "Retention" for how long is safe).

use anyhow::bail;
use chat_worker::config::Config;
use chat_worker::store::retention::{self, Removed, Table};
use chrono::{TimeDelta, Utc};

use crate::cli::PruneArgs;

/// Batches between two progress lines on stderr.
const PROGRESS_EVERY: u64 = 100;

pub async fn prune(config: &Config, args: &PruneArgs) -> anyhow::Result<()> {
    // The flag's parser holds the fixed floor; a configuration whose retries
    // may take longer raises it.
    let max_age = TimeDelta::seconds(i64::try_from(config.worker.max_message_age_secs).unwrap_or(i64::MAX));
    if args.older_than < max_age {
        bail!(
            "--older-than {}h keeps less than worker.max_message_age_secs ({}s): a message still being \
             retried could find its first attempt's rows gone",
            args.older_than.num_hours(),
            config.worker.max_message_age_secs
        );
    }
    let Some(before) = Utc::now().checked_sub_signed(args.older_than) else {
        bail!("--older-than reaches before the earliest time");
    };
    let db = super::database(config).await?;
    if args.dry_run {
        let would = retention::prunable(&db, before).await?;
        println!("dry run: nothing deleted; older than {}:", before.to_rfc3339());
        print_counts(&would);
        return Ok(());
    }
    let mut batches = 0u64;
    let removed = retention::prune(&db, before, args.batch_size, |table, so_far| {
        batches += 1;
        if batches.is_multiple_of(PROGRESS_EVERY) {
            tracing::info!(table = table.name(), removed = so_far, batches, "pruning");
        }
    })
    .await?;
    println!("pruned everything older than {} in {batches} transactions:", before.to_rfc3339());
    print_counts(&removed);
    Ok(())
}

fn print_counts(counts: &Removed) {
    for table in Table::ALL {
        println!("  {:<20} {}", table.name(), counts.of(table));
    }
}
