#pragma once
// Platforms of `ibn repro` (SPEC §8, cross-platform evaluation): the settings of the machine an
// experiment runs under that the experiment itself does not choose (LibTorch's CPU thread
// count, the training dtype, the device), so that the same grid can run under each and the
// spread across platforms be set beside the spread across seeds.
//
// Each platform runs the experiment's grid as an ordinary sweep whose experiment file is the
// original text with the platform's [train] and [analyze] settings appended
// (platform_experiment). An experiment that sets any of them itself is refused
// (check_platform_free): a platform that silently kept the experiment's value would not be
// the platform its name says.
#include <string>
#include <vector>

namespace ibn::sweep {

struct Platform {
  std::string name;      // "t1-fp32"; a repeat of platform P is named "P-rerun"
  int threads = 1;       // LibTorch CPU threads, of training and of the analysis
  std::string dtype;     // float32 | float64: training's parameters and activations
  std::string device;    // cpu | cuda: of training and of the analysis
  std::string rerun_of;  // empty, or the platform this one repeats (same settings, its own runs)
  // "threads = 1, dtype = float32, device = cpu"
  std::string settings() const;
};

// Every platform `ibn repro` knows, reruns aside: t1-fp32, t2-fp32, t1-fp64, t2-fp64 and
// cuda-fp32.
std::vector<Platform> known_platforms();

// What `ibn repro` runs without --platforms: the four CPU platforms, cuda-fp32 when a CUDA
// device is present, and a rerun of the first (whether a fixed thread count reruns bit for bit).
std::vector<Platform> default_platforms(bool cuda_available);

// "t1-fp32,t1-fp32-rerun,t1-fp64": names of known_platforms(), or NAME-rerun for a NAME also in
// the list; at least two entries, none twice. ibn::UsageError for an unknown or repeated name, a
// rerun of a platform not in the list, or fewer than two; std::runtime_error (exit 1: the
// machine, not the usage) for a CUDA platform without a CUDA device.
std::vector<Platform> parse_platforms(const std::string& list, bool cuda_available);

// Refuses (ibn::UsageError naming the file, line and key) an experiment whose [train], [analyze]
// or [grid] sets what a platform sets: threads, dtype or device.
void check_platform_free(const std::string& experiment_file);

// The experiment as it runs on `platform`: its text, then a [train] and an [analyze] section
// with the platform's settings. `experiment_file` is named in the header comment.
std::string platform_experiment(const std::string& experiment_text, const std::string& experiment_file, const Platform& platform);

}  // namespace ibn::sweep
