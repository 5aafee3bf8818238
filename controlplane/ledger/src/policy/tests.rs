//! The reward arithmetic from tables of cases.

use super::*;

const GB: i64 = 1_000_000_000;

#[test]
fn base_is_ten_cents_per_gb_and_remainders_carry() {
    let p = RewardPolicy::default();
    // (carried bytes, carry in, base nano-USD, carry out)
    let cases = [
        (GB, 0, 100_000_000, 0),
        (10 * GB, 0, 1_000_000_000, 0),
        (1, 0, 0, 100_000_000),
        (9, 0, 0, 900_000_000),
        (10, 0, 1, 0),
        (15, 0, 1, 500_000_000),
        (5, 500_000_000, 1, 0),
        (0, 999_999_999, 0, 999_999_999),
        (GB + 7, 300_000_000, 100_000_001, 0),
    ];
    for (carried, carry, base, after) in cases {
        assert_eq!(
            p.base(carried, carry),
            (base, after),
            "{carried} B with carry {carry}"
        );
    }
}

#[test]
fn a_day_split_in_bytes_earns_what_it_earns_in_one_piece() {
    let p = RewardPolicy::default();
    let (mut total, mut carry) = (0i64, 0i64);
    for _ in 0..1000 {
        let (nano, after) = p.base(12_345, carry);
        total += nano;
        carry = after;
    }
    let (whole, whole_carry) = p.base(12_345_000, 0);
    assert_eq!((total, carry), (whole, whole_carry), "nothing rounded away");
}

#[test]
fn stability_takes_the_best_tier_reached() {
    let p = RewardPolicy::default();
    let cases = [
        (1000, 100),
        (990, 100),
        (989, 50),
        (950, 50),
        (949, 20),
        (900, 20),
        (899, 0),
        (0, 0),
    ];
    for (uptime, bonus) in cases {
        assert_eq!(p.stability_permille(uptime), bonus, "uptime {uptime}‰");
    }
}

#[test]
fn streak_starts_after_the_minimum_and_is_capped() {
    let p = RewardPolicy::default();
    let cases = [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 10),
        (4, 20),
        (12, 100),
        (13, 100),
        (400, 100),
    ];
    for (days, bonus) in cases {
        assert_eq!(p.streak_permille(days), bonus, "{days} days");
    }
}

#[test]
fn a_day_itemises_base_and_both_bonuses() {
    let p = RewardPolicy::default();
    // (carried, uptime ‰, streak days) -> (base, stability, streak)
    let cases = [
        (20 * GB, 995, 5, (2_000_000_000, 200_000_000, 60_000_000)),
        (20 * GB, 960, 1, (2_000_000_000, 100_000_000, 0)),
        (20 * GB, 500, 30, (2_000_000_000, 0, 200_000_000)),
        (0, 1000, 30, (0, 0, 0)),
        (GB / 3, 1000, 3, (33_333_333, 3_333_333, 333_333)),
    ];
    for (carried, uptime, streak, (base, stability, streak_nano)) in cases {
        let d = p.day(carried, 0, uptime, streak);
        assert_eq!(
            (d.base_nano, d.stability_nano, d.streak_nano),
            (base, stability, streak_nano),
            "{carried} B, {uptime}‰ up, {streak} days"
        );
    }
}

#[test]
fn out_of_range_policies_are_refused() {
    assert_eq!(RewardPolicy::default().validate(), Ok(()));
    let rate = RewardPolicy {
        nano_usd_per_gb: 0,
        ..RewardPolicy::default()
    };
    assert_eq!(rate.validate(), Err(PolicyError::Rate(0)));
    let tier = StabilityTier {
        min_uptime_permille: 1001,
        bonus_permille: 1,
    };
    let tiers = RewardPolicy {
        stability_tiers: vec![tier],
        ..RewardPolicy::default()
    };
    assert_eq!(tiers.validate(), Err(PolicyError::Tier(tier)));
    let streak = RewardPolicy {
        streak_min_days: 0,
        ..RewardPolicy::default()
    };
    assert_eq!(streak.validate(), Err(PolicyError::Streak));
}
