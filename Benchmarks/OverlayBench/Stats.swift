// Summaries for the paired-round benchmarks (dataplane, encrypted): quantiles, a bootstrap interval
// of the median, and the one-line ratio summary their reports print.

import Foundation

/// The value at fraction `f` of the sorted values (the median at 0.5; for an even count, the
/// upper of the two middle values), as the tables print them.
func quantile(_ xs: [Double], _ f: Double) -> Double {
    let s = xs.sorted()
    return s[min(s.count - 1, Int(Double(s.count) * f))]
}

func median(_ xs: [Double]) -> Double { quantile(xs, 0.5) }

/// Median and quartiles.
func quantiles(_ xs: [Double]) -> (median: Double, low: Double, high: Double) {
    (quantile(xs, 0.5), quantile(xs, 0.25), quantile(xs, 0.75))
}

/// A 95% confidence interval for the median of `xs` by the percentile bootstrap: the median of
/// `resamples` samples drawn with replacement, its 2.5th and 97.5th percentiles. The generator
/// (SplitMix64) has a fixed seed, so the same figures always give the same interval.
func bootstrapMedianInterval(_ xs: [Double], resamples: Int = 4000) -> (low: Double, high: Double) {
    guard xs.count > 1 else { return (xs.first ?? 0, xs.first ?? 0) }
    var state: UInt64 = 0x5EED_0F_0BE2_1A7
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    var medians: [Double] = []
    medians.reserveCapacity(resamples)
    var sample = xs
    for _ in 0..<resamples {
        for j in sample.indices { sample[j] = xs[Int(next() % UInt64(xs.count))] }
        medians.append(median(sample))
    }
    return (quantile(medians, 0.025), quantile(medians, 0.975))
}

/// "96.0% (quartiles 88-108%, 95% CI of the median 93.1-98.4%)" for per-round ratios.
func ratioSummary(_ xs: [Double]) -> String {
    let q = quantiles(xs), ci = bootstrapMedianInterval(xs)
    return String(format: "%.1f%% (quartiles %.0f-%.0f%%, 95%% CI of the median %.1f-%.1f%%)",
                  q.median * 100, q.low * 100, q.high * 100, ci.low * 100, ci.high * 100)
}
