//! The mergeable sketches stored in rollups, with their stated errors.
//!
//! | sketch | crate | error | stored size |
//! |---|---|---|---|
//! | distinct count | Apache DataSketches HLL, lgK 12, HLL_4 | relative standard error 1.63 % (≈ 3.3 % at 95 %); exact below a few hundred values (list/set modes) | ≤ 2.1 KB; a few bytes per value while small |
//! | quantiles | DDSketch (`sketches-ddsketch`'s bytes and keys), α = `quantile_relative_error` | every quantile within α of the true value (relative), all ranks | ≈ 2–3 bytes per occupied bin; 1 % over 1 ms–1 h spans ≈ 800 bins. Open: a byte per bin of the occupied key range |
//! | top-K | Apache DataSketches frequent items (its bytes and algorithm), map of 4·K (≥ 16) | counts exact when fewer distinct values than 3/4 of the map; otherwise under by at most ≈ 3.5·N / map size | ≤ 3/4 map size entries. Open: 16 bytes and the text per entry |
//!
//! Open buckets keep compact forms of their own (see each module) that write
//! the crates' bytes, so what is stored, and every reader of it, is unchanged.
//!
//! All three merge: sketches of minutes merge into the hour exactly as if the
//! hour's events had been sketched directly (HLL and DDSketch), or within the
//! same bound (frequent items).

mod distinct;
mod quantiles;
mod top_k;

pub use distinct::{Distinct, HLL_LG_K};
pub use quantiles::Quantiles;
pub use top_k::TopK;

#[cfg(test)]
mod tests {
    use super::*;
    use distinct::{new_hll, DISTINCT_EXACT_MAX};
    use quantiles::new_ddsketch;

    #[test]
    fn hll_is_exact_when_small_and_merges() {
        let mut a = Distinct::default();
        let mut b = Distinct::default();
        for i in 0..50 {
            a.insert(&format!("u{i}"));
            b.insert(&format!("u{}", i + 25));
        }
        assert_eq!(a.estimate().round(), 50.0);
        a.merge(&b);
        assert_eq!(a.estimate().round(), 75.0);
        let back = Distinct::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back.estimate().round(), 75.0);
    }

    #[test]
    fn hll_error_within_stated_bound_at_scale() {
        let mut parts: Vec<Distinct> = (0..10).map(|_| Distinct::default()).collect();
        for i in 0..100_000 {
            parts[i % 10].insert(&format!("user-{i}"));
        }
        let mut all = Distinct::default();
        for p in &parts {
            all.merge(&Distinct::from_bytes(&p.to_bytes()).unwrap());
        }
        let err = (all.estimate() - 100_000.0).abs() / 100_000.0;
        assert!(err < 3.0 * 0.0163, "relative error {err}");
        assert!(
            all.to_bytes().len() <= 2200,
            "{} bytes",
            all.to_bytes().len()
        );
    }

    #[test]
    fn ddsketch_round_trips_and_merges() {
        let mut a = Quantiles::new(0.01);
        let mut b = Quantiles::new(0.01);
        for i in 1..=1000 {
            a.insert(i as f64);
            b.insert((i + 1000) as f64);
        }
        a.merge(&Quantiles::from_bytes(&b.to_bytes()).unwrap())
            .unwrap();
        let p50 = a.quantile(0.5).unwrap();
        assert!((p50 - 1000.0).abs() <= 0.01 * 1000.0 + 1.0, "{p50}");
        assert_eq!(a.count(), 2000);
    }

    /// Deterministic log-normal values (xorshift + Box–Muller), no RNG crate needed.
    fn log_normal(n: usize, mu: f64, sigma: f64) -> Vec<f64> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let z =
                    (-2.0 * uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * uniform()).cos();
                (mu + sigma * z).exp()
            })
            .collect()
    }

    #[test]
    fn quantiles_of_100k_log_normal_values_within_stated_error() {
        let values = log_normal(100_000, 7.0, 0.8); // page loads around 1.1 s, long tail
                                                    // Sketched in 60 per-minute pieces, stored, read back and merged, as an hour is.
        let mut hour = Quantiles::new(0.01);
        for chunk in values.chunks(values.len() / 60 + 1) {
            let mut minute = Quantiles::new(0.01);
            chunk.iter().for_each(|v| minute.insert(*v));
            hour.merge(&Quantiles::from_bytes(&minute.to_bytes()).unwrap())
                .unwrap();
        }
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.5, 0.95, 0.99] {
            // DDSketch's rank convention: the value at rank ⌊q·(n−1)⌋.
            let exact = sorted[(q * (sorted.len() - 1) as f64).floor() as usize];
            let estimate = hour.quantile(q).unwrap();
            let err = (estimate - exact).abs() / exact;
            assert!(
                err <= 0.01 + 1e-9,
                "p{}: exact {exact}, estimate {estimate}, error {err}",
                q * 100.0
            );
        }
    }

    /// Issue 15: a bucket that started as a list and was promoted answers and
    /// stores exactly as the crate's sketch fed the same values from the start,
    /// and both are within the stated error of the truth.
    #[test]
    fn promoted_lists_answer_like_sketches_from_the_start() {
        for n in [10, DISTINCT_EXACT_MAX, DISTINCT_EXACT_MAX + 1, 5_000] {
            let mut ours = Distinct::default();
            let mut reference = new_hll();
            for i in 0..n {
                let v = format!("user-{}", i % (n - n / 10).max(1));
                ours.insert(&v);
                reference.update(v.as_str());
            }
            let truth = (n - n / 10).max(1) as f64;
            assert_eq!(ours.is_sketch(), truth > DISTINCT_EXACT_MAX as f64);
            // What is stored decodes, with the crate, to the same estimate.
            let stored = datasketches::hll::HllSketch::deserialize(&ours.to_bytes()).unwrap();
            assert_eq!(stored.estimate(), ours.estimate(), "{n} values");
            if !ours.is_sketch() {
                // The same coupons as the crate's own list or set.
                assert_eq!(ours.estimate(), reference.estimate(), "{n} values");
                assert_eq!(ours.to_bytes().len(), reference.serialize().len());
            }
            for estimate in [ours.estimate(), reference.estimate()] {
                assert!(
                    (estimate - truth).abs() <= 3.0 * 0.0163 * truth + 1.0,
                    "{n}: {estimate}"
                );
            }
            // Merging a list into a promoted sketch and the other way round.
            let mut small = Distinct::default();
            small.insert("someone-else");
            let mut a = ours.clone();
            a.merge(&small);
            let mut b = small.clone();
            b.merge(&ours);
            assert_eq!(a.estimate(), b.estimate());
            assert!((a.estimate() - truth - 1.0).abs() <= 3.0 * 0.0163 * truth + 1.0);
        }
        // Two lists whose union passes the list limit become one sketch.
        let mut a = Distinct::default();
        let mut b = Distinct::default();
        for i in 0..200 {
            a.insert(&format!("a{i}"));
            b.insert(&format!("b{i}"));
        }
        a.merge(&b);
        assert!(a.is_sketch());
        assert!(
            (a.estimate() - 400.0).abs() <= 3.0 * 0.0163 * 400.0,
            "{}",
            a.estimate()
        );
        // Quantiles keep the crate's bins from the first value: the same bytes
        // and answers as the crate's sketch, including values below the floor,
        // negative ones, and a range past the crate's 2,048 bins, where the
        // crate's own sketch takes over and collapses its lowest bins.
        let mut values = log_normal(2_000, 7.0, 0.8);
        values.extend([0.0, -3.5, -700.0, 1e-12, 2.5e-9]);
        values.extend(log_normal(500, 7.0, 0.8));
        let mut wide = values.clone();
        wide.extend([1e-8, 1e12, 3e15, 1e-7]);
        for (values, n) in [
            (&values, 3),
            (&values, 256),
            (&values, 2_000),
            (&values, values.len()),
            (&wide, wide.len()),
        ] {
            let mut ours = Quantiles::new(0.01);
            let mut reference = new_ddsketch(0.01);
            for v in &values[..n] {
                ours.insert(*v);
                reference.add(*v);
            }
            assert_eq!(ours.is_sketch(), std::ptr::eq(values, &wide), "{n} values");
            assert_eq!(ours.to_bytes(), reference.to_java_bytes(), "{n} values");
            assert_eq!(ours.count(), n);
            for q in [0.0, 0.01, 0.5, 0.95, 0.99, 1.0] {
                assert_eq!(
                    ours.quantile(q),
                    reference.quantile(q).unwrap(),
                    "q {q} of {n}"
                );
            }
            // Merged in halves, as minutes into an hour: still the crate's bytes.
            let (a, b) = values[..n].split_at(n / 2);
            let mut left = Quantiles::new(0.01);
            let mut right = Quantiles::new(0.01);
            a.iter().for_each(|v| left.insert(*v));
            b.iter().for_each(|v| right.insert(*v));
            left.merge(&right).unwrap();
            let mut merged = new_ddsketch(0.01);
            let mut other = new_ddsketch(0.01);
            a.iter().for_each(|v| merged.add(*v));
            b.iter().for_each(|v| other.add(*v));
            merged.merge(&other).unwrap();
            assert_eq!(left.to_bytes(), merged.to_java_bytes(), "{n} values merged");
            // A stored sketch merges into an open one and the other way round.
            let mut from_store = Quantiles::from_bytes(&right.to_bytes()).unwrap();
            from_store.merge(&Quantiles::new(0.01)).unwrap();
            let mut open = Quantiles::new(0.01);
            a.iter().for_each(|v| open.insert(*v));
            open.merge(&Quantiles::from_bytes(&right.to_bytes()).unwrap())
                .unwrap();
            assert_eq!(open.to_bytes(), merged.to_java_bytes());
        }
        // A bin past 255 values widens its counters; the bytes stay the crate's.
        let mut ours = Quantiles::new(0.01);
        let mut reference = new_ddsketch(0.01);
        for i in 0..1_000 {
            let v = if i % 2 == 0 { 500.0 } else { 10.0 + i as f64 };
            ours.insert(v);
            reference.add(v);
        }
        assert_eq!(ours.to_bytes(), reference.to_java_bytes());
    }

    /// Documents written before the compact forms (the crates' own sketches)
    /// and after hold the same formats, so a query range that spans both
    /// merges them as one sketch.
    #[test]
    fn sketches_stored_before_and_after_merge_alike() {
        use datasketches::frequencies::FrequentItemsSketch;
        let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
        let loads = log_normal(400, 7.0, 0.8);
        let pages: Vec<String> = (0..400).map(|i| format!("/p/{}", i % 7)).collect();
        // Before: the crates' sketches, as the writer made them.
        let mut old_users = new_hll();
        users[..150]
            .iter()
            .for_each(|u| old_users.update(u.as_str()));
        let mut old_loads = new_ddsketch(0.01);
        loads[..200].iter().for_each(|v| old_loads.add(*v));
        let mut old_pages = FrequentItemsSketch::<String>::new(TopK::map_size(10)).unwrap();
        pages[..200]
            .iter()
            .for_each(|p| old_pages.update(p.clone()));
        // After: the compact forms (users 100..150 seen by both).
        let mut new_users = Distinct::default();
        users[100..].iter().for_each(|u| new_users.insert(u));
        let mut new_loads = Quantiles::new(0.01);
        loads[200..].iter().for_each(|v| new_loads.insert(*v));
        let mut new_pages = TopK::new(10);
        pages[200..].iter().for_each(|p| new_pages.insert(p));
        // A query decodes both and merges them.
        let mut users_all = Distinct::from_bytes(&old_users.serialize()).unwrap();
        users_all.merge(&Distinct::from_bytes(&new_users.to_bytes()).unwrap());
        assert!((users_all.estimate() - 300.0).abs() <= 3.0 * 0.0163 * 300.0);
        let mut loads_all = Quantiles::from_bytes(&old_loads.to_java_bytes()).unwrap();
        loads_all
            .merge(&Quantiles::from_bytes(&new_loads.to_bytes()).unwrap())
            .unwrap();
        let mut reference = new_ddsketch(0.01);
        loads[200..].iter().for_each(|v| reference.add(*v));
        old_loads.merge(&reference).unwrap();
        assert_eq!(loads_all.to_bytes(), old_loads.to_java_bytes());
        let mut pages_all = TopK::from_bytes(&old_pages.serialize(), 10).unwrap();
        pages_all.merge(&TopK::from_bytes(&new_pages.to_bytes(), 10).unwrap());
        // Seven pages fit the map: counts exact.
        for i in 0..7 {
            let truth = pages.iter().filter(|p| **p == format!("/p/{i}")).count() as u64;
            assert_eq!(pages_all.estimate(&format!("/p/{i}")), truth);
        }
        assert_eq!(pages_all.total(), 400);
    }

    /// Merging narrow counters whose sum passes 255 in a bin, or whose keys
    /// lie outside the open range on either side, still gives the crate's bytes.
    #[test]
    fn quantile_merges_that_widen_or_extend_the_range_are_the_crates() {
        let parts: [Vec<f64>; 3] = [
            vec![500.0; 200],
            (0..200)
                .map(|i| 500.0 + (i % 2 * (i % 5)) as f64 * 40.0)
                .collect(),
            (0..50).map(|i| 0.5 + i as f64 * 1e3).collect(),
        ];
        let mut ours = Quantiles::new(0.01);
        let mut reference = new_ddsketch(0.01);
        for part in &parts {
            let mut minute = Quantiles::new(0.01);
            let mut crate_minute = new_ddsketch(0.01);
            part.iter().for_each(|v| minute.insert(*v));
            part.iter().for_each(|v| crate_minute.add(*v));
            ours.merge(&minute).unwrap();
            reference.merge(&crate_minute).unwrap();
            assert_eq!(ours.to_bytes(), reference.to_java_bytes());
        }
    }

    /// A window filled by merges keeps one union and folds each merge into
    /// it: its estimate and its stored HLL_4 image are those of the crate's
    /// union of the same minutes, and a query reads them back alike.
    #[test]
    fn windows_filled_by_merges_answer_like_the_crates_union() {
        use datasketches::hll::{HllType, HllUnion};
        let users: Vec<String> = (0..1_100).map(|i| format!("u{i}")).collect();
        // Ten minutes of 200 users each, overlapping by half.
        let mut hour = Distinct::default();
        let mut theirs = HllUnion::new(HLL_LG_K).unwrap();
        for m in 0..10 {
            let minute = &users[m * 100..m * 100 + 200];
            let mut d = Distinct::default();
            minute.iter().for_each(|u| d.insert(u));
            hour.merge(&d);
            let mut crate_minute = new_hll();
            minute.iter().for_each(|u| crate_minute.update(u.as_str()));
            theirs.update(&crate_minute);
        }
        let stored = hour.to_bytes();
        assert!(stored.len() <= 2_200, "HLL_4: {} bytes", stored.len());
        let crate_image = theirs.to_sketch(HllType::Hll4).serialize();
        let (ours, crates) = (
            Distinct::from_bytes(&stored).unwrap().estimate(),
            Distinct::from_bytes(&crate_image).unwrap().estimate(),
        );
        // Same registers; the crate's in-order estimator may differ in the last digits.
        assert!((ours - crates).abs() / crates < 1e-3, "{ours} vs {crates}");
        assert!((hour.estimate() - ours).abs() / ours < 1e-3);
        assert!((ours - 1_100.0).abs() <= 3.0 * 0.0163 * 1_100.0);
        let mut range = Distinct::from_bytes(&crate_image).unwrap();
        range.merge(&Distinct::from_bytes(&stored).unwrap());
        assert!((range.estimate() - 1_100.0).abs() <= 3.0 * 0.0163 * 1_100.0);
    }

    /// Our coupon is the crate's, read from the list image of a one-value sketch.
    #[test]
    fn coupons_are_the_crates() {
        let mut values: Vec<String> = (0..40).map(|n| "x".repeat(n)).collect();
        values.extend(["u12345", "sessionId-éà", "🙂", "/products/113"].map(String::from));
        for v in &values {
            let mut sketch = new_hll();
            sketch.update(v.as_str());
            let bytes = sketch.serialize();
            let theirs = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            assert_eq!(distinct::coupon(v), theirs, "{v:?}");
        }
    }

    /// The top-K of an open bucket is the crate's frequent-items algorithm:
    /// the crate decodes its bytes to the same counts, and every estimate is
    /// within the stated bound of the truth, whether the map ever purged or not.
    #[test]
    fn top_k_matches_the_crate_and_its_bound() {
        use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
        for (distinct, n) in [
            (5, 40),
            (12, 1_000),
            (200, 139),
            (200, 10_000),
            (5_000, 20_000),
        ] {
            let mut ours = TopK::new(10);
            let mut truth = std::collections::HashMap::<String, u64>::new();
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Skewed: low ranks are frequent.
                let rank = (state % distinct as u64) * (state % 7 + 1) / 7;
                let v = format!("/p/{rank}");
                ours.insert(&v);
                *truth.entry(v).or_default() += 1;
            }
            let decoded = FrequentItemsSketch::<String>::deserialize(&ours.to_bytes()).unwrap();
            assert_eq!(decoded.total_weight(), n as u64);
            let bound = (3.5 * n as f64 / TopK::map_size(10) as f64).ceil() as u64;
            assert!(
                decoded.maximum_error() <= bound,
                "offset {}",
                decoded.maximum_error()
            );
            for (v, count) in &truth {
                let estimate = ours.estimate(v);
                assert_eq!(decoded.estimate(v.as_str()), estimate, "{v}");
                // Present values are over by at most the offset; dropped ones were at most it.
                if estimate > 0 {
                    assert!(estimate >= *count && estimate - count <= decoded.maximum_error());
                } else {
                    assert!(*count <= decoded.maximum_error(), "{v}: {count}");
                }
            }
            let rows = decoded.frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0);
            let mut top: Vec<(&str, u64)> = rows
                .iter()
                .map(|r| (r.item().as_str(), r.estimate()))
                .collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            top.truncate(10);
            assert_eq!(ours.top(), top);
            let back = TopK::from_bytes(&ours.to_bytes(), 10).unwrap();
            assert_eq!(back.top(), ours.top());
            assert_eq!(back.to_bytes().len(), ours.to_bytes().len());
            if distinct <= 12 {
                // Fewer values than the map holds: exact.
                assert_eq!(decoded.maximum_error(), 0);
            }
        }
    }

    #[test]
    fn small_buckets_allocate_no_sketch() {
        let mut d = Distinct::default();
        let mut q = Quantiles::new(0.01);
        let t = TopK::new(10);
        for i in 0..100 {
            d.insert(&format!("u{i}"));
            q.insert(300.0 + i as f64);
        }
        assert!(!d.is_sketch() && !q.is_sketch());
        assert!(d.heap_size() <= 100 * 4 * 5 / 4 + 16, "{}", d.heap_size());
        // A byte per bin of the 1 % key range of 300..400 (≈ 15 bins), plus the fixed part.
        assert!(q.heap_size() <= 200, "{}", q.heap_size());
        assert_eq!((t.heap_size(), t.total()), (0, 0));
        assert!(t.top().is_empty());
        assert_eq!(TopK::from_bytes(&t.to_bytes(), 10).unwrap().total(), 0);
    }

    #[test]
    fn topk_orders_and_merges() {
        let mut a = TopK::new(2);
        let mut b = TopK::new(2);
        for (v, n) in [("/a", 5), ("/b", 3), ("/c", 1)] {
            for _ in 0..n {
                a.insert(v);
            }
        }
        for _ in 0..4 {
            b.insert("/c");
        }
        a.merge(&TopK::from_bytes(&b.to_bytes(), 2).unwrap());
        assert_eq!(a.top(), vec![("/a", 5), ("/c", 5)]);
        assert_eq!(a.total(), 13);
    }
}
