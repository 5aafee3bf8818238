//! A key's restrictions as one line of text, for `turbo:events` (`policy <key> <rules>`):
//! space-separated `<kind>:<verdict>:<expires ms>:<reason>[:<arguments>]`, where kind is
//! `suspend`, `throttle` (arguments: tunnels per second, then bytes per second) or
//! `block` (argument: the site's hex identity). An empty list lifts every restriction. Observations restrict nothing
//! and are not sent.

use std::sync::Arc;

use turbo_dataplane::control::KeyEvent;
use turbo_dataplane::policy::{Restriction, RestrictionKind};

use crate::store::detect::{Action, Verdict};

/// The rules text for the verdicts in force on one key at `now_unix_ms`.
pub fn text(verdicts: &[&Verdict], now_unix_ms: u64) -> String {
    let items = verdicts.iter().filter(|v| v.in_force(now_unix_ms));
    let items = items.filter_map(|v| {
        let token = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let head = |kind: &str| {
            format!(
                "{kind}:{}:{}:{}",
                token(&v.id),
                v.expires_at,
                token(&v.reason)
            )
        };
        Some(match v.action {
            Action::Observe => return None,
            Action::Suspend => head("suspend"),
            Action::Throttle => format!(
                "{}:{}:{}",
                head("throttle"),
                v.tunnels_per_sec.unwrap_or(1),
                v.bytes_per_sec.unwrap_or(0)
            ),
            Action::BlockTarget => format!("{}:{}", head("block"), token(v.target.as_deref()?)),
        })
    });
    items.collect::<Vec<_>>().join(" ")
}

/// Reads one restriction; `None` when malformed.
fn restriction(item: &str) -> Option<Restriction> {
    let mut parts = item.split(':');
    let (kind, verdict, expires, reason) = (
        parts.next()?,
        parts.next()?,
        parts.next()?.parse().ok()?,
        parts.next()?,
    );
    let kind = match (kind, parts.next()) {
        ("suspend", None) => RestrictionKind::Suspend,
        ("throttle", Some(rate)) => RestrictionKind::Throttle {
            tunnels_per_sec: rate.parse().ok()?,
            bytes_per_sec: parts.next().map_or(Some(0), |b| b.parse().ok())?,
        },
        ("block", Some(site)) => RestrictionKind::BlockTarget(u64::from_str_radix(site, 16).ok()?),
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Restriction {
        verdict: verdict.into(),
        kind,
        expires_unix_ms: expires,
        reason: reason.into(),
    })
}

/// The event for `key_id`'s rules text; `None` when any item is malformed (a message
/// from something else on the channel).
pub fn event(key_id: &str, rules: &str) -> Option<KeyEvent> {
    if key_id.is_empty() {
        return None;
    }
    let list: Option<Vec<Restriction>> = rules.split_whitespace().map(restriction).collect();
    Some(KeyEvent::Policy {
        key_id: key_id.into(),
        rules: Arc::from(list?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action, expires_at: u64) -> Verdict {
        Verdict {
            id: "v_1".into(),
            key_id: "k_1".into(),
            action,
            reason: "port_sweep".into(),
            features: Default::default(),
            drivers: vec![],
            target: Some("00000000000000ff".into()),
            tunnels_per_sec: Some(5),
            bytes_per_sec: Some(65536),
            window_unix_ms: 0,
            created_unix_ms: 0,
            expires_at,
            model_version: 0,
            lifted_unix_ms: None,
        }
    }

    #[test]
    fn rules_round_trip_and_skip_what_is_not_in_force() {
        let s = verdict(Action::Suspend, 100);
        let t = verdict(Action::Throttle, 100);
        let b = verdict(Action::BlockTarget, 100);
        let o = verdict(Action::Observe, 100);
        let old = verdict(Action::Suspend, 10);
        let line = text(&[&s, &t, &b, &o, &old], 50);
        assert_eq!(
            line,
            "suspend:v_1:100:port_sweep throttle:v_1:100:port_sweep:5:65536 \
             block:v_1:100:port_sweep:00000000000000ff"
        );
        let Some(KeyEvent::Policy { key_id, rules }) = event("k_1", &line) else {
            panic!("no event");
        };
        assert_eq!(&*key_id, "k_1");
        let kinds: Vec<_> = rules.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RestrictionKind::Suspend,
                RestrictionKind::Throttle {
                    tunnels_per_sec: 5,
                    bytes_per_sec: 65536
                },
                RestrictionKind::BlockTarget(255)
            ]
        );
        assert!(
            matches!(event("k_1", ""), Some(KeyEvent::Policy { rules, .. }) if rules.is_empty())
        );
        assert!(event("k_1", "suspend:v:notanumber:x").is_none());
        assert!(event("k_1", "explode:v:1:x").is_none());
    }
}
