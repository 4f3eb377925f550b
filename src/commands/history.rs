//! `worker history`: a customer's conversation, paged (CONTRACT §6).

use anyhow::{Context, bail};
use chat_worker::config::Config;
use chat_worker::store::{self, HistoryPage};

use crate::cli::HistoryArgs;

pub async fn history(config: &Config, args: &HistoryArgs) -> anyhow::Result<()> {
    let db = super::database(config).await?;
    let conversation = store::customer_conversation(&db, args.tenant, &args.channel, &args.customer)
        .await
        .context("finding the conversation")?;
    let Some(conversation_id) = conversation else {
        bail!(
            "customer {} has no conversation on {} with tenant {}",
            args.customer,
            args.channel,
            args.tenant
        );
    };
    let page = store::history_page(&db, conversation_id, args.page, args.page_size)
        .await
        .context("reading the conversation")?;
    if args.json {
        println!("{}", serde_json::to_string(&page)?);
    } else {
        print_text(&page);
    }
    Ok(())
}

fn print_text(page: &HistoryPage) {
    println!(
        "conversation {}: page {} of {} ({} messages, {} per page)",
        page.conversation_id,
        page.page,
        page.pages.max(1),
        page.total,
        page.page_size
    );
    if page.messages.is_empty() {
        println!("(no messages on this page)");
    }
    for m in &page.messages {
        let text = m.text.replace('\n', " / ");
        println!(
            "{}  {:<3}  {}  {}",
            m.created_at.format("%Y-%m-%d %H:%M:%S%.3f"),
            m.direction,
            m.provider_message_id,
            text
        );
    }
    // u64: page + 1 of page u32::MAX must not overflow.
    let (previous, next) = (u64::from(page.page).saturating_sub(1), u64::from(page.page) + 1);
    let nav = match (page.has_previous, page.has_next) {
        (true, true) => format!("--page {previous} or --page {next}"),
        (true, false) => format!("--page {previous} for the previous page"),
        (false, true) => format!("--page {next} for the next page"),
        (false, false) => String::new(),
    };
    if !nav.is_empty() {
        println!("({nav})");
    }
}
