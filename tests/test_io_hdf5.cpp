// The HDF5 layer: round trips of every supported type, compression of large arrays, errors that
// name what is missing, atomic writes, and files that h5py (Debian's python3-h5py) reads.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ibn/error.h"
#include "ibn/io/atomic_file.h"
#include "ibn/io/background_writer.h"
#include "ibn/io/hdf5.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using ibn::test::throws_usage_error;

// Runs a Python snippet with h5py; argv[1] is `file`.
void run_h5py(const std::string& code, const std::string& file) {
  const std::string command = "/usr/bin/python3 -c \"import h5py, numpy as np, sys\n" + code + "\" " + file;
  ASSERT_EQ(std::system(command.c_str()), 0) << "h5py failed (is python3-h5py installed?): " << code;
}

class Hdf5Test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ibn::test::scratch_path("hdf5", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(Hdf5Test, RoundTripsEveryTypeWithGroupsAndAttributes) {
  torch::manual_seed(61);
  const auto f32 = torch::randn({7, 3});
  const auto f64 = torch::randn({4, 2, 3}, torch::kDouble);
  const auto i32 = torch::randint(-5, 5, {6}, torch::kInt);
  const auto i64 = torch::randint(0, 1000000, {5, 2}, torch::kLong);
  const auto u8 = torch::randint(0, 255, {9}, torch::kByte);
  const auto flags = torch::rand({4}) > 0.5;
  const auto big = torch::randn({5000, 64});  // chunked and compressed
  ibn::io::write_datasets(path("a.h5"),
                          {{"/x", f32, {{"units", std::string("nats")}, {"beta", 0.5}, {"epoch", int64_t{3}}}},
                           {"/deep/er/y", f64, {}},
                           {"/i32", i32, {}},
                           {"/i64", i64, {}},
                           {"/u8", u8, {}},
                           {"/flags", flags, {}},
                           {"/big", big, {}},
                           {"/half", big, {}, /*float16=*/true}},
                          {{"config", std::string("model=mlp\nseed=1")}, {"seed", int64_t{1}}});
  const auto read = [&](const char* name) { return ibn::io::read_dataset(path("a.h5"), name); };
  EXPECT_TRUE(read("/x").equal(f32));
  EXPECT_EQ(read("/x").scalar_type(), torch::kFloat);
  EXPECT_TRUE(read("/deep/er/y").equal(f64));
  EXPECT_TRUE(read("/i32").equal(i32.to(torch::kLong)));
  EXPECT_TRUE(read("/i64").equal(i64));
  EXPECT_TRUE(read("/u8").equal(u8.to(torch::kLong)));
  EXPECT_TRUE(read("/flags").equal(flags.to(torch::kLong)));
  EXPECT_TRUE(read("/big").equal(big));
  EXPECT_TRUE(read("/half").equal(big.to(torch::kHalf).to(torch::kFloat)));  // rounded to half, read back exactly
  EXPECT_EQ(std::get<std::string>(ibn::io::read_attribute(path("a.h5"), "/x", "units")), "nats");
  EXPECT_EQ(std::get<double>(ibn::io::read_attribute(path("a.h5"), "/x", "beta")), 0.5);
  EXPECT_EQ(std::get<int64_t>(ibn::io::read_attribute(path("a.h5"), "/x", "epoch")), 3);
  EXPECT_EQ(std::get<std::string>(ibn::io::read_attribute(path("a.h5"), "/", "config")), "model=mlp\nseed=1");
  EXPECT_EQ(ibn::io::list_datasets(path("a.h5")),
            (std::vector<std::string>{"/big", "/deep/er/y", "/flags", "/half", "/i32", "/i64", "/u8", "/x"}));
}

// Large arrays are chunked and deflated: a compressible one takes a fraction of its raw bytes.
TEST_F(Hdf5Test, CompressesLargeArrays) {
  const auto steps = torch::arange(200000, torch::kFloat).div(1000).floor().reshape({5000, 40});
  ibn::io::write_datasets(path("z.h5"), {{"/steps", steps, {}}});
  EXPECT_LT(fs::file_size(path("z.h5")), steps.numel() * 4 / 10);
  EXPECT_TRUE(ibn::io::read_dataset(path("z.h5"), "/steps").equal(steps));
}

TEST_F(Hdf5Test, MissingThingsAreNamed) {
  ibn::io::write_datasets(path("b.h5"), {{"/group/t", torch::zeros({2, 2}), {}}, {"/labels", torch::zeros({2}), {}}});
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("none.h5"), "/t"); }, "no such file"));
  std::ofstream(path("text.h5")) << "not hdf5";
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("text.h5"), "/t"); }, "is not an HDF5 file"));
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("b.h5"), "/group/u"); },
                                 "no dataset '/group/u' in '" + path("b.h5") + "' (datasets: /group/t, /labels)"));
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("b.h5"), "/nowhere/u"); }, "no dataset '/nowhere/u'"));
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("b.h5"), "/group"); }, "is a group, not a dataset"));
}

// HDF5's C++ exceptions end as the tool's errors, and a file whose links form a cycle is
// listed once per dataset (it recursed without end: a stack overflow or 2.7 GB and bad_alloc).
TEST_F(Hdf5Test, StrangeFilesGiveErrorsNotCrashes) {
  run_h5py("f = h5py.File(sys.argv[1], 'w'); g = f.create_group('a'); g['x'] = np.zeros(3); g['loop'] = g; "
           "f['d'] = np.zeros(2); f.close()", path("cycle.h5"));
  EXPECT_EQ(ibn::io::list_datasets(path("cycle.h5")), (std::vector<std::string>{"/a/x", "/d"}));
  // A path through a dataset: H5::LocationException escaped as std::terminate.
  EXPECT_TRUE(throws_usage_error([&] { ibn::io::read_dataset(path("cycle.h5"), "/d/y"); }, "no dataset '/d/y'"));
  EXPECT_TRUE(ibn::io::read_dataset(path("cycle.h5"), "/a/loop/loop/x").equal(torch::zeros({3}, torch::kDouble)));
  // A file that starts like HDF5 and then is cut off.
  {
    std::ifstream whole(path("cycle.h5"), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(whole)), {});
    std::ofstream(path("cut.h5"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  }
  for (const auto& read : std::vector<std::function<void()>>{[&] { ibn::io::list_datasets(path("cut.h5")); },
                                                             [&] { ibn::io::read_dataset(path("cut.h5"), "/d"); }}) {
    try {
      read();
      ADD_FAILURE() << "a truncated file read without error";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("cut.h5"), std::string::npos) << e.what();
    }
  }
}

// Temporaries are created, never opened: a symlink at the target is replaced, not written
// through, and a killed writer's temporary has a name only this library gives.
TEST_F(Hdf5Test, AtomicWritesFollowNoSymlink) {
  std::ofstream(path("victim.txt")) << "precious";
  fs::create_symlink(path("victim.txt"), path("k.csv"));
  ibn::io::write_file_atomically(path("k.csv"), "a,b\n");
  EXPECT_FALSE(fs::is_symlink(path("k.csv")));
  std::ifstream victim(path("victim.txt"));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(victim)), {}), "precious");
  {
    const ibn::io::TemporaryFile temporary(path("config.ini"));
    const std::string name = fs::path(temporary.path()).filename().string();
    EXPECT_TRUE(ibn::io::is_temporary_of(name, "config.ini")) << name;
    EXPECT_FALSE(ibn::io::is_temporary_of(name, "metrics.csv")) << name;
    EXPECT_TRUE(fs::exists(temporary.path()));
  }
  EXPECT_FALSE(ibn::io::is_temporary_of("notes.tmp.txt", "notes.txt"));
  EXPECT_FALSE(ibn::io::is_temporary_of(".config.ini.ibn-tmp-ab/def", "config.ini"));
  int entries = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) entries += entry.path().filename().string()[0] == '.';
  EXPECT_EQ(entries, 0) << "a temporary outlived its TemporaryFile";
}

// Several files as one: a failure before the renames leaves every target as it was.
TEST_F(Hdf5Test, FilesWrittenTogetherOrNotAtAll) {
  ibn::io::write_file_atomically(path("a.csv"), "old a");
  fs::create_directories(path("sub"));
  EXPECT_THROW(ibn::io::write_files_atomically({{path("a.csv"), "new a"}, {path("missing/b.csv"), "new b"}}),
               std::runtime_error);
  std::ifstream a(path("a.csv"));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(a)), {}), "old a");
  ibn::io::write_files_atomically({{path("a.csv"), "new a"}, {path("sub/b.csv"), "new b"}});
  std::ifstream a2(path("a.csv")), b(path("sub/b.csv"));
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(a2)), {}), "new a");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(b)), {}), "new b");
}

// A failed write leaves an existing file as it was and no temporary file behind.
TEST_F(Hdf5Test, WritesAreAtomic) {
  ibn::io::write_datasets(path("c.h5"), {{"/t", torch::ones({3}), {}}});
  EXPECT_THROW(ibn::io::write_datasets(path("c.h5"), {{"/t", torch::zeros({3}), {}}, {"/bad", torch::zeros({2}, torch::kComplexFloat), {}}}),
               std::runtime_error);
  EXPECT_TRUE(ibn::io::read_dataset(path("c.h5"), "/t").equal(torch::ones({3})));
  EXPECT_THROW(ibn::io::write_datasets(path("missing_dir/d.h5"), {{"/t", torch::ones({3}), {}}}), std::runtime_error);
  int entries = 0;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(entry.path().filename(), "c.h5");
  }
  EXPECT_EQ(entries, 1);
}

// copy_from gathers other files' datasets at the same paths, next to the new ones.
TEST_F(Hdf5Test, CopiesTheDatasetsOfOtherFiles) {
  const auto big = torch::randn({3000, 40});  // compressed, chunked: copied as stored
  ibn::io::write_datasets(path("part1.h5"), {{"/epochs/1/fc1", big, {}}, {"/epochs/1/fc2", torch::arange(5), {}}});
  ibn::io::write_datasets(path("part2.h5"), {{"/epochs/2/fc1", big * 2, {}}});
  ibn::io::write_datasets(path("all.h5"), {{"/meta/x", torch::ones({2}), {}}}, {{"complete", int64_t{1}}},
                          {path("part1.h5"), path("part2.h5")});
  EXPECT_EQ(ibn::io::list_datasets(path("all.h5")),
            (std::vector<std::string>{"/epochs/1/fc1", "/epochs/1/fc2", "/epochs/2/fc1", "/meta/x"}));
  EXPECT_TRUE(ibn::io::read_dataset(path("all.h5"), "/epochs/2/fc1").equal(big * 2));
  EXPECT_TRUE(ibn::io::read_dataset(path("all.h5"), "/epochs/1/fc2").equal(torch::arange(5)));
  // Two sources with the same dataset: an error, and the target is not written.
  EXPECT_THROW(ibn::io::write_datasets(path("clash.h5"), {}, {}, {path("part1.h5"), path("part1.h5")}), std::runtime_error);
  EXPECT_FALSE(fs::exists(path("clash.h5")));
}

// The background writer writes every queued file, in order, and hands a failed write's error
// to the producer at its next call; later files are not written.
TEST_F(Hdf5Test, BackgroundWriterWritesInOrderAndReportsFailures) {
  {
    ibn::io::BackgroundWriter writer(1);
    for (int i = 0; i < 6; ++i) writer.write(path(fmt::format("f{}.h5", i)), {{"/v", torch::full({1000}, i), {}}});
    writer.drain();
    for (int i = 0; i < 6; ++i) EXPECT_EQ(ibn::io::read_dataset(path(fmt::format("f{}.h5", i)), "/v")[999].item<double>(), i);
  }
  ibn::io::BackgroundWriter writer(4);
  writer.write(path("nowhere/a.h5"), {{"/v", torch::ones({3}), {}}});
  writer.write(path("later.h5"), {{"/v", torch::ones({3}), {}}});  // queued or refused; never written
  try {
    writer.drain();
    ADD_FAILURE() << "drain() after a failed write did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("nowhere/a.h5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(writer.write(path("after.h5"), {{"/v", torch::ones({3}), {}}}), std::runtime_error);
  EXPECT_FALSE(fs::exists(path("later.h5")));
  EXPECT_FALSE(fs::exists(path("after.h5")));
}

// A writer killed with SIGKILL at any moment leaves the previous file whole (or none): never a
// truncated file under the target's name.
TEST_F(Hdf5Test, AKilledWriterLeavesThePreviousFileWhole) {
  // Both payloads made here: the child does no tensor arithmetic (thread pools do not survive fork).
  const auto payload = torch::randn({20000, 50}), payload_plus_one = payload + 1;
  ibn::io::write_datasets(path("store.h5"), {{"/x", payload, {}}}, {{"complete", int64_t{1}}});
  for (int attempt = 0; attempt < 6; ++attempt) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      try {
        for (int i = 0;; ++i) {
          ibn::io::write_datasets(path("store.h5"), {{"/x", i % 2 ? payload_plus_one : payload, {}}}, {{"complete", int64_t{1}}});
        }
      } catch (...) {
        ::_exit(3);
      }
    }
    ::usleep(50000 + 37000 * attempt);  // different moments of the write cycle
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    ASSERT_EQ(std::get<int64_t>(ibn::io::read_attribute(path("store.h5"), "/", "complete")), 1);
    const auto x = ibn::io::read_dataset(path("store.h5"), "/x");
    EXPECT_TRUE(x.equal(payload) || x.equal(payload_plus_one)) << "attempt " << attempt;
  }
}

// Files ibn writes open in h5py with the same values and attributes; files h5py writes
// (float16 and int8 included) read back here.
TEST_F(Hdf5Test, InterchangeableWithH5py) {
  const auto values = torch::arange(12, torch::kFloat).reshape({3, 4}).div(4);
  ibn::io::write_datasets(path("ours.h5"), {{"/epochs/1/layer", values, {{"layer", std::string("fc1")}}}},
                          {{"seed", int64_t{5}}});
  const std::string check =
      "/usr/bin/python3 -c \"import h5py, numpy as np, sys; f = h5py.File(sys.argv[1], 'r'); "
      "d = f['/epochs/1/layer']; "
      "assert d.dtype == np.float32 and d.shape == (3, 4), d; "
      "assert np.allclose(d[...], np.arange(12).reshape(3, 4) / 4); "
      "assert d.attrs['layer'] == 'fc1', d.attrs['layer']; assert f.attrs['seed'] == 5; "
      "g = h5py.File(sys.argv[2], 'w'); g['half'] = np.arange(6, dtype=np.float16).reshape(3, 2) / 2; "
      "g['labels'] = np.array([1, -2, 3], dtype=np.int8); g.close()\" " +
      path("ours.h5") + " " + path("theirs.h5");
  ASSERT_EQ(std::system(check.c_str()), 0) << "h5py could not read or write (is python3-h5py installed?)";
  const auto half = ibn::io::read_dataset(path("theirs.h5"), "/half");
  EXPECT_EQ(half.scalar_type(), torch::kFloat);
  EXPECT_TRUE(half.equal(torch::arange(6, torch::kFloat).reshape({3, 2}).div(2)));
  EXPECT_TRUE(ibn::io::read_dataset(path("theirs.h5"), "/labels").equal(torch::tensor({1, -2, 3}, torch::kLong)));
}

}  // namespace
