//! Who may trigger a run: members of `trigger.org` (Gitea's org-membership endpoint,
//! 204 = member; it needs only read access, unlike the collaborators endpoint) and
//! the logins in `trigger.allow`. Logins compare case-insensitively, as Gitea's do.
use super::gitea::{self, Client, Membership};
use crate::config::TriggerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

/// Decide whether `user` may trigger. Errors (Gitea down) mean "ask again later".
pub fn authorize(client: &Client, trigger: &TriggerConfig, user: &str) -> gitea::Result<Decision> {
    if user.is_empty() {
        return Ok(Decision::Denied);
    }
    if trigger.allow.iter().any(|a| a.eq_ignore_ascii_case(user)) {
        return Ok(Decision::Allowed);
    }
    let Some(org) = &trigger.org else {
        return Ok(Decision::Denied);
    };
    match client.membership(org, user)? {
        Membership::Member => Ok(Decision::Allowed),
        Membership::NotMember => Ok(Decision::Denied),
        Membership::BotCannotSee => {
            tracing::warn!(
                org = %org,
                user = %user,
                "gitea redirected the membership check to public_members: the bot is not a member of the org, so private members are treated as non-members"
            );
            Ok(Decision::Denied)
        }
    }
}
