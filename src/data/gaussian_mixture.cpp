// gaussian-mixture: K classes whose means differ in `informative` dimensions only, plus
// `nuisance` dimensions of pure noise (variance `noise_var`) that carry no label information:
// a layer that compresses shows it by discarding them (the nuisance ratio falls).
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <fmt/format.h>

#include "ibn/data/dataset.h"
#include "ibn/spec_string.h"

namespace ibn::data {
namespace {

ClassificationData load(KeyValueSpec& kv, uint64_t seed) {
  const int64_t classes = kv.integer_at_least("classes", 2, 2);
  const int64_t informative = kv.integer_at_least("informative", 2, 1);
  const int64_t nuisance = kv.integer_at_least("nuisance", 8, 0);
  const int64_t n = kv.integer_at_least("n", 4000, 4);
  const double separation = kv.number("sep", 3.0);
  kv.require_above("sep", separation, 0);
  const double noise_var = kv.number("noise_var", 4.0);
  kv.require_above("noise_var", noise_var, 0);
  const double test = kv.number("test", 0.2);
  kv.require_within("test", test, 0.01, 0.9);
  const int64_t data_seed = kv.integer("data_seed", 0);

  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(data_seed));
  const at::Tensor means = at::randn({classes, informative}, g, at::kFloat).mul(separation);
  const at::Tensor labels = at::randint(classes, {n}, g, at::TensorOptions().dtype(at::kLong));
  const at::Tensor signal = means.index_select(0, labels).add(at::randn({n, informative}, g, at::kFloat));
  const at::Tensor noise = at::randn({n, nuisance}, g, at::kFloat).mul(std::sqrt(noise_var));
  ClassificationData data;
  data.spec = fmt::format("gaussian-mixture:classes={},informative={},nuisance={},n={},sep={},noise_var={},test={},data_seed={}",
                          classes, informative, nuisance, n, separation, noise_var, test, data_seed);
  data.description = fmt::format("{} Gaussian classes in {} informative dims (means ~ N(0, {}^2)) plus {} nuisance dims of variance {}",
                                 classes, informative, separation, nuisance, noise_var);
  data.classes = classes;
  split_with_seed(kv, data, at::cat({signal, noise}, 1), labels, test, seed);
  return data;
}

}  // namespace

DatasetEntry gaussian_mixture_dataset() {
  return {"gaussian-mixture", "Gaussian classes in informative dims plus label-free nuisance dims",
          "classes (2), informative (2), nuisance (8), n (4000), sep (3), noise_var (4), test (0.2), data_seed (0), split_seed (the run seed)", load};
}

}  // namespace ibn::data
