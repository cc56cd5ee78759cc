#pragma once
// The cross-platform report of `ibn repro` (SPEC §8, §9): the same grid run on several platforms
// (ibn/sweep/platform.h), and per quantity (final test accuracy and loss, I(X;T) and I(T;Y) of
// every analyzed layer and Σ_l I(T_l;Y), Σ_l I(T_(l−1);T_l), Σ_l IB_l per estimator at the last
// analyzed epoch, κ of every normalization site) the spread across platforms beside the spread
// across seeds, which results are bit-identical between platforms, and the runs left out.
//
// Spread across platforms: per grid point (a setting and seed) the standard deviation over the
// platforms, pooled over the points; across seeds: per platform and setting the standard
// deviation over the seeds, pooled over those groups (stats::pooled_spread). Reruns (a platform
// run twice) show whether a platform reproduces itself; they are not counted as platforms of
// their own in the spreads. Flagged runs (report.h: `chance`, `unconverged`) and failed runs
// are left out of the spreads and counted; bit-identity is judged on every finished run.
#include <ostream>
#include <string>
#include <vector>

#include "ibn/report/report.h"
#include "ibn/sweep/platform.h"

namespace ibn::report {

// One grid point on one platform.
struct PlatformPoint {
  ReportRun run;        // its run directory and grid settings
  std::string id;       // the point's id: the same on every platform
  std::string missing;  // empty when the point finished; else why it has no result ("failed: train: ...")
};

// One platform's sweep of the grid: every point, in the grid's order (the same on every platform).
struct PlatformSweep {
  sweep::Platform platform;
  std::vector<PlatformPoint> points;
};

// Writes OUT/repro.md, OUT/repro.csv (per quantity: the mean, both spreads, the groups they
// pool, their ratio, which is larger, the bit-identical platforms) and OUT/repro_values.csv (every run's value
// of every quantity, to 17 significant digits, with its flags), all or none; returns repro.md's
// path. `experiment` is the experiment file the platforms ran. Throws ibn::UsageError when no
// run finished, ibn::DataError when the runs were analyzed differently.
std::string write_repro_report(const std::string& out, const std::vector<PlatformSweep>& platforms, const std::string& experiment,
                               const ReportOptions& options, std::ostream& log);

}  // namespace ibn::report
