#include "neural.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "ibn/error.h"
#include "ibn/mi/entropy.h"
#include "ibn/spec_string.h"

namespace ibn::mi::neural {
namespace {

constexpr int64_t kMaxEvalSamples = 2048;  // score matrices of held-out splits are at most this square
constexpr int64_t kMaxOneHotClasses = 1024;

torch::nn::Sequential mlp(int64_t in, int64_t hidden, int64_t layers, int64_t out) {
  torch::nn::Sequential net;
  int64_t width = in;
  for (int64_t i = 0; i < layers; ++i) {
    net->push_back(torch::nn::Linear(width, hidden));
    net->push_back(torch::nn::ReLU());
    width = hidden;
  }
  net->push_back(torch::nn::Linear(width, out));
  return net;
}

// T(a, b): on aligned pairs ([B] scores) or on every pair of two batches ([Ba, Bb]).
struct CriticImpl : torch::nn::Module {
  CriticImpl(const Options& o, int64_t da, int64_t db) : separable(o.critic == "separable") {
    if (separable) {
      f = register_module("f", mlp(da, o.hidden, o.layers, o.hidden));
      g = register_module("g", mlp(db, o.hidden, o.layers, o.hidden));
    } else {
      f = register_module("t", mlp(da + db, o.hidden, o.layers, 1));
    }
  }

  torch::Tensor pairs(const torch::Tensor& a, const torch::Tensor& b) {
    if (separable) return f->forward(a).mul(g->forward(b)).sum(1);
    return f->forward(torch::cat({a, b}, 1)).squeeze(1);
  }

  torch::Tensor all(const torch::Tensor& a, const torch::Tensor& b) {
    if (separable) return f->forward(a).matmul(g->forward(b).t());
    const int64_t na = a.size(0), nb = b.size(0);
    const auto joined = torch::cat({a.unsqueeze(1).expand({na, nb, a.size(1)}),
                                    b.unsqueeze(0).expand({na, nb, b.size(1)})}, 2);
    return f->forward(joined.reshape({na * nb, -1})).reshape({na, nb});
  }

  bool separable;
  torch::nn::Sequential f{nullptr}, g{nullptr};
};
TORCH_MODULE(Critic);

// log mean exp over the off-diagonal entries of a square score matrix.
torch::Tensor off_diagonal_log_mean_exp(const torch::Tensor& scores) {
  const int64_t n = scores.size(0);
  const auto mask = torch::eye(n, scores.options().dtype(torch::kBool));
  return torch::logsumexp(scores.masked_fill(mask, -std::numeric_limits<float>::infinity()).reshape({-1}), 0) -
         std::log(static_cast<double>(n * (n - 1)));
}

// The bound's value on a square score matrix whose diagonal holds the joint pairs.
torch::Tensor bound_value(const torch::Tensor& scores, Bound bound, double tau) {
  const auto joint = scores.diagonal().mean();
  switch (bound) {
    case Bound::DonskerVaradhan: return joint - off_diagonal_log_mean_exp(scores);
    case Bound::Smile: return joint - off_diagonal_log_mean_exp(scores.clamp(-tau, tau));
    case Bound::InfoNCE:
      return (scores.diagonal() - torch::logsumexp(scores, 1)).mean() + std::log(static_cast<double>(scores.size(0)));
  }
  return joint;
}

// The f-GAN Jensen-Shannon lower bound E_P[−softplus(−T)] − E_Q[softplus(T)] of a square score
// matrix (diagonal: joint pairs, off-diagonal: product of marginals).
torch::Tensor jensen_shannon(const torch::Tensor& scores) {
  const int64_t n = scores.size(0);
  const auto off_diagonal = torch::eye(n, scores.options().dtype(torch::kBool)).logical_not();
  const auto joint = torch::softplus(scores.diagonal().neg()).neg().mean();
  const auto marginal = torch::softplus(scores.masked_select(off_diagonal)).mean();
  return joint - marginal;
}

// Continuous sides standardised with the training split's moments; labels one-hot.
torch::Tensor features(const Variable& v, const torch::Tensor& train_rows) {
  if (v.discrete) {
    const auto ids = row_ids(v.values);
    const int64_t classes = ids.max().item<int64_t>() + 1;
    if (classes <= kMaxOneHotClasses) return torch::one_hot(ids, classes).to(torch::kFloat);
    const auto codes = v.values.reshape({v.values.size(0), -1}).to(torch::kFloat);
    return codes.sub(codes.mean(0)).div(codes.std(0).clamp_min(1e-6));
  }
  const auto x = as_matrix(v).to(torch::kFloat);
  const auto train = x.index_select(0, train_rows);
  return x.sub(train.mean(0)).div(train.std(0).clamp_min(1e-6));
}

}  // namespace

Options read_options(KeyValueSpec& kv, Bound bound) {
  Options o;
  o.critic = kv.word("critic", bound == Bound::DonskerVaradhan ? "concat" : "separable", {"concat", "separable"});
  o.hidden = kv.integer_at_least("hidden", o.hidden, 1);
  o.layers = kv.integer_at_least("layers", o.layers, 1);
  o.batch = kv.integer_at_least("batch", o.batch, 2);
  o.steps = kv.integer_at_least("steps", o.steps, 1);
  o.eval_every = kv.integer_at_least("eval_every", o.eval_every, 1);
  o.patience = kv.integer_at_least("patience", o.patience, 1);
  o.lr = kv.number("lr", o.lr);
  kv.require_above("lr", o.lr, 0);
  o.test = kv.number("test", o.test);
  kv.require_within("test", o.test, 0.01, 0.9);
  o.valid = kv.number("valid", o.valid);
  kv.require_within("valid", o.valid, 0.01, 0.9);
  o.seed = kv.integer("seed", o.seed);
  if (bound == Bound::DonskerVaradhan) {
    o.ema = kv.number("ema", o.ema);
    kv.require_within("ema", o.ema, 1e-6, 1);
  }
  if (bound == Bound::Smile) {
    o.tau = kv.number("tau", o.tau);
    kv.require_above("tau", o.tau, 0);
  }
  return o;
}

std::string options_str(const Options& o, Bound bound) {
  std::string out = fmt::format("critic={}:hidden={}:layers={}:batch={}:steps={}:eval_every={}:patience={}:lr={}:test={}:valid={}:seed={}",
                                o.critic, o.hidden, o.layers, o.batch, o.steps, o.eval_every, o.patience, o.lr,
                                o.test, o.valid, o.seed);
  if (bound == Bound::DonskerVaradhan) out += fmt::format(":ema={}", o.ema);
  if (bound == Bound::Smile) out += fmt::format(":tau={}", o.tau);
  return out;
}

const char* accepted_keys(Bound bound) {
  switch (bound) {
    case Bound::DonskerVaradhan:
      return "critic (concat), hidden (128), layers (2), batch (256), steps (2000), eval_every (50), patience (8), "
             "lr (1e-3), test (0.2), valid (0.1), seed (0), ema (0.01)";
    case Bound::Smile:
      return "critic (separable), hidden (128), layers (2), batch (256), steps (2000), eval_every (50), "
             "patience (8), lr (1e-3), test (0.2), valid (0.1), seed (0), tau (5)";
    case Bound::InfoNCE: break;
  }
  return "critic (separable), hidden (128), layers (2), batch (256), steps (2000), eval_every (50), patience (8), "
         "lr (1e-3), test (0.2), valid (0.1), seed (0)";
}

Estimate estimate(const Variable& a, const Variable& b, const Options& o, Bound bound, const std::string& spec) {
  const int64_t n = check_pair(a, b);
  const auto device = a.values.device();
  // Splits from one seeded permutation: test | valid | train.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o.seed));
  const auto order = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong)).to(device);
  const int64_t n_test = std::max<int64_t>(2, static_cast<int64_t>(std::ceil(o.test * n)));
  const int64_t n_valid = std::max<int64_t>(2, static_cast<int64_t>(std::ceil(o.valid * (n - n_test))));
  const int64_t n_train = n - n_test - n_valid;
  if (n_train < 2) throw DataError(fmt::format("{} samples leave none to train the critic on", n));
  const auto test_rows = order.slice(0, 0, std::min(n_test, kMaxEvalSamples));
  const auto valid_rows = order.slice(0, n_test, n_test + std::min(n_valid, kMaxEvalSamples));
  const auto train_rows = order.slice(0, n_test + n_valid);

  const auto fa = features(a, train_rows), fb = features(b, train_rows);
  torch::manual_seed(static_cast<uint64_t>(o.seed));  // the critic's initial weights
  Critic critic(o, fa.size(1), fb.size(1));
  critic->to(device);
  torch::optim::Adam optimizer(critic->parameters(), torch::optim::AdamOptions(o.lr));

  const auto held_out = [&](const torch::Tensor& rows) {
    torch::NoGradGuard no_grad;
    critic->eval();
    const auto ra = fa.index_select(0, rows), rb = fb.index_select(0, rows);
    // Score rows in blocks so the concat critic's [rows, N, da+db] input stays small.
    const int64_t block = std::max<int64_t>(1, (int64_t{1} << 22) / (rows.size(0) * (fa.size(1) + fb.size(1))));
    std::vector<torch::Tensor> parts;
    for (int64_t s = 0; s < rows.size(0); s += block) parts.push_back(critic->all(ra.slice(0, s, s + block), rb));
    critic->train();
    return bound_value(torch::cat(parts, 0), bound, o.tau).item<double>();
  };

  auto batch_generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(o.seed) + 1);
  const int64_t batch = std::min(o.batch, n_train);
  torch::Tensor log_moving_average;  // MINE: log of the moving average of E_Q[e^T]
  double best = -std::numeric_limits<double>::infinity();
  std::vector<torch::Tensor> best_state;
  int64_t evaluations_without_gain = 0, steps_run = 0;
  bool stopped_early = false;
  double last_train = 0;
  for (int64_t step = 1; step <= o.steps; ++step) {
    const auto pick = at::randint(n_train, {batch}, batch_generator, at::TensorOptions().dtype(at::kLong)).to(device);
    const auto rows = train_rows.index_select(0, pick);
    const auto ba = fa.index_select(0, rows), bb = fb.index_select(0, rows);
    torch::Tensor objective;
    if (bound == Bound::DonskerVaradhan) {
      const auto shuffled = at::randperm(batch, batch_generator, at::TensorOptions().dtype(at::kLong)).to(device);
      const auto joint = critic->pairs(ba, bb);
      const auto marginal = critic->pairs(ba, bb.index_select(0, shuffled));
      const auto log_mean_exp = torch::logsumexp(marginal, 0) - std::log(static_cast<double>(batch));
      // Belghazi et al.'s bias correction, in log space: the gradient of log E_Q[e^T] is
      // E_Q[∇T e^T] / E_Q[e^T]; the denominator is replaced by its moving average.
      const auto current = log_mean_exp.detach();
      log_moving_average = log_moving_average.defined()
                               ? torch::logaddexp(log_moving_average + std::log1p(-o.ema), current + std::log(o.ema))
                               : current;
      objective = joint.mean() - torch::exp(log_mean_exp - log_moving_average);
      last_train = (joint.mean() - log_mean_exp).item<double>();
    } else if (bound == Bound::Smile) {
      // Song & Ermon train SMILE's critic on the Jensen-Shannon bound and only evaluate the
      // clipped Donsker-Varadhan form: maximising the clipped form itself is unbounded, since
      // the joint term E_P[T] is not clipped.
      const auto scores = critic->all(ba, bb);
      objective = jensen_shannon(scores);
      last_train = bound_value(scores.detach(), bound, o.tau).item<double>();
    } else {
      objective = bound_value(critic->all(ba, bb), bound, o.tau);
      last_train = objective.item<double>();
    }
    optimizer.zero_grad();
    objective.neg().backward();
    optimizer.step();
    steps_run = step;
    if (step % o.eval_every == 0 || step == o.steps) {
      const double valid = held_out(valid_rows);
      if (valid > best) {
        best = valid;
        best_state.clear();
        for (const auto& p : critic->parameters()) best_state.push_back(p.detach().clone());
        evaluations_without_gain = 0;
      } else if (++evaluations_without_gain >= o.patience) {
        stopped_early = true;
        break;
      }
    }
  }
  if (best_state.empty()) {
    // No held-out evaluation gave a finite score: the critic diverged from the first steps.
    throw DataError(fmt::format("{}: every held-out score of the critic was NaN or infinite (lr {}); the training "
                                "diverged: lower lr", spec, o.lr));
  }
  {
    torch::NoGradGuard no_grad;
    const auto params = critic->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best_state[i]);
  }
  Estimate e{spec, held_out(test_rows), {}, {}, {}};
  e.details.emplace_back("valid_nats", fmt::format("{:.6f}", best));
  e.details.emplace_back("train_nats", fmt::format("{:.6f}", last_train));
  e.details.emplace_back("steps", fmt::format("{}", steps_run));
  e.details.emplace_back("stopped_early", stopped_early ? "true" : "false");
  e.details.emplace_back("test_samples", fmt::format("{}", test_rows.size(0)));
  return e;
}

}  // namespace ibn::mi::neural
