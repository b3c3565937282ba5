#include <sys/stat.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "../helpers.h"
#include "cp2/io/atomic_file.h"
#include "cp2/io/checkpoint.h"
#include "cp2/io/zip.h"

using namespace cp2;
using cp2::test::expect_error;
using cp2::test::fixture;

namespace {

std::string write_bytes(const std::string& name, const std::string& bytes) {
  std::string p = ::testing::TempDir() + name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

// `read(path)` on a named pipe that a thread fills with `bytes`, as `cp2 convert <(curl ...)`
// reads: the pipe removed afterwards. `read` must read the pipe to its end (every loader does).
template <class Read>
auto through_pipe(const std::string& bytes, Read&& read) {
  const std::string fifo = ::testing::TempDir() + "through.fifo";
  std::remove(fifo.c_str());
  if (mkfifo(fifo.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + fifo + " failed");
  std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << bytes; });
  struct Done {
    std::thread& writer;
    const std::string& fifo;
    ~Done() {
      writer.join();
      std::remove(fifo.c_str());
    }
  } done{writer, fifo};
  return read(fifo);
}

class Dtypes : public ::testing::TestWithParam<std::string> {};

TEST_P(Dtypes, EveryDtypeSharedStoragesAndNestedValues) {
  auto ck = io::load_checkpoint(fixture(GetParam()));
  EXPECT_EQ(ck.format, GetParam().find("legacy") != std::string::npos ? io::Format::Legacy : io::Format::Zip);
  ASSERT_EQ(ck.root->kind, py::Kind::Dict);
  EXPECT_TRUE(ck.root->ordered);
  auto base = torch::arange(12, torch::kFloat).reshape({3, 4}) / 4;
  auto t = [&](const char* k) { return ck.root->get(k)->tensor; };
  EXPECT_TRUE(torch::equal(t("f32"), base));
  EXPECT_EQ(t("f16").scalar_type(), torch::kHalf);
  EXPECT_TRUE(torch::equal(t("f16").to(torch::kFloat), base));  // quarters are exact in fp16/bf16
  EXPECT_EQ(t("bf16").scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(t("bf16").to(torch::kFloat), base));
  EXPECT_TRUE(torch::equal(t("f64"), base.to(torch::kDouble)));
  EXPECT_TRUE(torch::equal(t("i64"), torch::arange(-5, 5, torch::kLong)));
  EXPECT_TRUE(torch::equal(t("i32"), torch::arange(-5, 5, torch::kInt)));
  EXPECT_TRUE(torch::equal(t("i16"), torch::arange(-5, 5, torch::kShort)));
  EXPECT_TRUE(torch::equal(t("i8"), torch::arange(-5, 5, torch::kChar)));
  EXPECT_TRUE(torch::equal(t("u8"), torch::arange(0, 250, 25, torch::kByte)));
  EXPECT_TRUE(torch::equal(t("bool"), torch::arange(6) % 2 == 0));
  auto shared = torch::arange(20, torch::kFloat);
  EXPECT_TRUE(torch::equal(t("shared"), shared));
  EXPECT_TRUE(torch::equal(t("view"), shared.slice(0, 3, 9)));
  EXPECT_TRUE(torch::equal(t("strided"), shared.view({4, 5}).t()));
  EXPECT_FALSE(t("strided").is_contiguous());
  EXPECT_EQ(t("view").data_ptr<float>(), t("shared").data_ptr<float>() + 3);  // one storage, as in Python
  EXPECT_EQ(t("scalar").dim(), 0);
  EXPECT_EQ(t("scalar").item<float>(), 2.5f);
  EXPECT_EQ(t("empty").sizes(), (std::vector<int64_t>{0, 3}));

  auto nested = ck.root->get("nested");
  EXPECT_TRUE(torch::equal(nested->get("a")->get("b")->tensor, torch::ones({2})));
  EXPECT_EQ(nested->get("epoch")->i, 7);
  EXPECT_EQ(nested->get("lr")->f, 0.5);
  EXPECT_EQ(nested->get("name")->s, "resnet50");
  EXPECT_TRUE(nested->get("flag")->b);
  EXPECT_EQ(nested->get("none")->kind, py::Kind::None);
  EXPECT_EQ(nested->get("list")->items.size(), 3u);
  EXPECT_EQ(nested->get("big")->i, int64_t(1) << 40);
  EXPECT_EQ(nested->get("neg")->i, -3);

  std::map<std::string, std::string> flat;
  for (auto& [k, v] : io::flatten(ck.root)) flat[k] = v->type_name();
  EXPECT_EQ(flat["nested.a.b"], "Tensor");
  EXPECT_EQ(flat["nested.3"], "str");  // int dict keys are stringified
  EXPECT_EQ(flat["nested.list"], "list");
}

INSTANTIATE_TEST_SUITE_P(BothContainers, Dtypes, ::testing::Values("dtypes.pt", "dtypes_legacy.pt", "dtypes_deflated.pt"));

TEST(Checkpoint, WriteReadRoundTrip) {
  auto root = py::dict();
  auto sd = io::to_state_dict({{"a.weight", torch::randn({3, 4})},
                               {"b", torch::arange(5, torch::kLong)},
                               {"h", torch::randn({2, 2}).to(torch::kHalf)},
                               {"bf", torch::randn({7}).to(torch::kBFloat16)},
                               {"nc", torch::randn({4, 6}).t()}});
  py::set(root, "model", sd);
  py::set(root, "epoch", py::integer(3));
  py::set(root, "big", py::integer(int64_t(1) << 45));
  py::set(root, "lr", py::real(0.015));
  py::set(root, "name", py::str("résumé"));
  py::set(root, "list", py::list({py::integer(-1), py::boolean(false), py::none()}));
  std::string p = ::testing::TempDir() + "roundtrip.pt";
  io::save_checkpoint(p, root);
  auto back = io::load_checkpoint(p);
  ASSERT_EQ(back.format, io::Format::Zip);
  auto m = back.root->get("model");
  ASSERT_TRUE(m && m->ordered);
  ASSERT_EQ(m->dict.size(), sd->dict.size());
  for (size_t k = 0; k < m->dict.size(); ++k) {
    EXPECT_EQ(m->dict[k].first->s, sd->dict[k].first->s);
    EXPECT_TRUE(torch::equal(m->dict[k].second->tensor, sd->dict[k].second->tensor));
  }
  EXPECT_EQ(back.root->get("epoch")->i, 3);
  EXPECT_EQ(back.root->get("big")->i, int64_t(1) << 45);
  EXPECT_DOUBLE_EQ(back.root->get("lr")->f, 0.015);
  EXPECT_EQ(back.root->get("name")->s, "résumé");
  EXPECT_EQ(back.root->get("list")->items[0]->i, -1);
  EXPECT_FALSE(std::ifstream(p + ".tmp").good());  // temp file renamed away
}

TEST(Checkpoint, StructureReadsThePickleAloneWhereItCan) {
  // Every key's shape and dtype as the whole load has them; the tensors on the meta device
  // where the pickle is the file's first stored entry with its sizes in its header (cp2's
  // files), loaded whole otherwise (torch.save's, whose headers defer the sizes to a data
  // descriptor; deflated; legacy).
  const std::string mine = ::testing::TempDir() + "structure_cp2.pt";
  auto root = py::dict();
  py::set(root, "config", py::str("model:\n  arch: 18\n"));
  py::set(root, "state_dict", io::to_state_dict({{"w", torch::randn({64, 32})}, {"b", torch::arange(5)}}));
  io::save_checkpoint(mine, root);
  for (const auto& [path, on_meta] : std::vector<std::pair<std::string, bool>>{{fixture("dtypes.pt"), false},
                                                                               {mine, true},
                                                                               {fixture("dtypes_deflated.pt"), false},
                                                                               {fixture("dtypes_legacy.pt"), false}}) {
    const auto whole = io::flatten(io::load_checkpoint(path).root);
    const auto part = io::flatten(io::load_checkpoint_structure(path).root);
    ASSERT_EQ(part.size(), whole.size()) << path;
    for (size_t i = 0; i < whole.size(); ++i) {
      EXPECT_EQ(part[i].first, whole[i].first) << path;
      ASSERT_EQ(part[i].second->kind, whole[i].second->kind) << path << " " << whole[i].first;
      if (whole[i].second->kind != py::Kind::Tensor) continue;
      const auto &p = part[i].second->tensor, &w = whole[i].second->tensor;
      EXPECT_EQ(p.sizes(), w.sizes()) << path << " " << whole[i].first;
      EXPECT_EQ(p.strides(), w.strides()) << path << " " << whole[i].first;
      EXPECT_EQ(p.scalar_type(), w.scalar_type()) << path << " " << whole[i].first;
      EXPECT_EQ(p.is_meta(), on_meta) << path << " " << whole[i].first;
    }
  }
  // A file cut short after its pickle: the structure (and so the stored config) still reads;
  // the whole load says the file is truncated.
  const auto cut = write_bytes("structure_cut.pt", io::read_file(mine).substr(0, 4096));
  EXPECT_EQ(io::load_checkpoint_structure(cut).root->get("config")->s, "model:\n  arch: 18\n");
  expect_error([&] { io::load_checkpoint(cut); }, {cut, "truncated"});
  expect_error([&] { io::load_checkpoint_structure(::testing::TempDir() + "no_such.pt"); }, {"no_such.pt", "cannot open"});
  // Through a pipe, read once and whole: the same keys as from the file.
  const auto piped = through_pipe(io::read_file(fixture("dtypes.pt")),
                                  [](const std::string& p) { return io::flatten(io::load_checkpoint_structure(p).root); });
  EXPECT_EQ(piped.size(), io::flatten(io::load_checkpoint(fixture("dtypes.pt")).root).size());
}

// A regular file is read in one piece; a pipe (cp2 convert <(curl ...)) as a stream.
TEST(Checkpoint, ReadFileFromAFileAndAPipe) {
  std::string bytes(100000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7919 % 251);
  EXPECT_EQ(io::read_file(write_bytes("plain.bin", bytes)), bytes);
  EXPECT_EQ(io::read_file(write_bytes("empty.bin", "")), "");
  EXPECT_EQ(through_pipe(bytes, [](const std::string& p) { return io::read_file(p); }), bytes);
}

// A zip checkpoint in a regular file is read entry by entry, each storage straight into its
// tensor; through a pipe it is read whole first. Both give the same values, for torch.save's
// files (stored, deflated) and cp2's (with a 10 MiB storage: the large-storage path).
TEST(Checkpoint, ZipFromAFileAndFromAPipeLoadTheSame) {
  const at::Tensor big = torch::randn({10, 1 << 18});
  const std::string mine = ::testing::TempDir() + "file_and_pipe.pt";
  io::save_checkpoint(mine, io::to_state_dict({{"big", big}, {"small", torch::arange(7)}, {"view", big[3]}}));
  for (const std::string& path : {fixture("dtypes.pt"), fixture("dtypes_deflated.pt"), mine}) {
    const auto from_file = io::flatten(io::load_checkpoint(path).root);
    const auto from_pipe =
        through_pipe(io::read_file(path), [](const std::string& p) { return io::flatten(io::load_checkpoint(p).root); });
    ASSERT_EQ(from_file.size(), from_pipe.size()) << path;
    ASSERT_GE(from_file.size(), 3u) << path;
    for (size_t i = 0; i < from_file.size(); ++i) {
      EXPECT_EQ(from_file[i].first, from_pipe[i].first) << path;
      const auto &f = from_file[i].second, &q = from_pipe[i].second;
      ASSERT_EQ(f->kind, q->kind) << path << " " << from_file[i].first;
      if (f->kind == py::Kind::Tensor)
        EXPECT_TRUE(torch::equal(f->tensor, q->tensor)) << path << " " << from_file[i].first;
    }
  }
  auto back = cp2::test::load_tensors(mine);
  EXPECT_TRUE(torch::equal(back.at("big"), big));
  EXPECT_TRUE(torch::equal(back.at("view"), big[3]));
}

// A legacy file is read in place too: its pickles from a first part of the file, grown while
// they run past it (this one's are ~3.4 MiB, past the first 1 MiB), its storages straight into
// their tensors. Through a pipe, and cut short, it reads as before.
TEST(Checkpoint, LegacyPicklesLongerThanTheFirstRead) {
  const std::string path = fixture("long_pickle_legacy.pt");
  auto check = [](const io::Checkpoint& ck, const std::string& where) {
    EXPECT_EQ(ck.format, io::Format::Legacy) << where;
    const auto items = io::flatten(ck.root);
    ASSERT_EQ(items.size(), 30001u) << where;
    for (size_t i = 0; i < 30000; i += 997) {
      EXPECT_EQ(items[i].first, "t" + std::to_string(i)) << where;
      EXPECT_TRUE(torch::equal(items[i].second->tensor, torch::full({3}, static_cast<float>(i)))) << where;
    }
    EXPECT_EQ(items[29999].second->tensor[2].item<float>(), 29999.f) << where;
    EXPECT_EQ(items.back().first, "big") << where;
    EXPECT_TRUE(torch::equal(items.back().second->tensor, torch::arange(3 << 20, torch::kFloat))) << where;
  };
  check(io::load_checkpoint(path), "file");
  const std::string bytes = io::read_file(path);
  check(through_pipe(bytes, [](const std::string& p) { return io::load_checkpoint(p); }), "pipe");
  // Cut inside the pickles (past the first read) and inside the last storage.
  for (size_t n : {size_t(2) << 20, bytes.size() - 5}) {
    auto p = write_bytes("long_pickle_cut.pt", bytes.substr(0, n));
    expect_error([&] { io::load_checkpoint(p); }, {p, "truncated"});
  }
}

namespace {

// `cp2 ARGS` as a child process: its exit code, its output, and its peak resident memory (MiB).
// The peak comes from a small Python parent's wait4: a child's ru_maxrss starts at the RSS of
// the process it was forked or vforked from, which this test process's would overstate.
struct Child {
  int rc = -1;
  std::string out;
  double peak_mib = 0;
};
Child run_measured(const std::string& args) {
  const auto r = cp2::test::run_cli(
      args, std::string(CP2_PYTHON) +
                " -c 'import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                "print(\"\\nrc\", r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' ");
  Child c;
  const size_t at = r.out.rfind("\nrc ");
  if (r.rc != 0 || at == std::string::npos) {
    c.out = r.out;
    return c;
  }
  c.out = r.out.substr(0, at);
  long kib = 0;
  std::sscanf(r.out.c_str() + at + 4, "%d %ld", &c.rc, &kib);
  c.peak_mib = kib / 1024.0;
  return c;
}

// A legacy checkpoint's pickles as torch < 1.6 wrote them: magic number, protocol, sys_info
// (the preamble), then {"big": float32[n]} and its storage keys; the storage's element count
// and bytes follow them in the file.
std::string legacy_preamble() {
  auto magic = std::make_shared<py::Object>();
  magic->kind = py::Kind::Bytes;
  magic->s = std::string("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
  auto sys_info = py::dict();
  py::set(sys_info, "little_endian", py::boolean(true));
  auto none = [](const at::Tensor&) -> std::string { return ""; };
  return py::pickle(magic, none) + py::pickle(py::integer(1001), none) + py::pickle(sys_info, none);
}
std::string legacy_pickles(int64_t n) {
  auto root = py::dict(true);
  py::set(root, "big", py::tensor(torch::empty({n})));  // never touched: no memory taken here
  auto key = [](const at::Tensor&) -> std::string { return "0"; };
  return legacy_preamble() + py::pickle(root, key) + py::pickle(py::list({py::str("0")}), key);
}
// `head`, then a hole up to `file_bytes`: a large file that takes no disk.
std::string sparse_file(const std::string& name, const std::string& head, uint64_t file_bytes) {
  const std::string p = write_bytes(name, head);
  std::filesystem::resize_file(p, file_bytes);
  return p;
}

}  // namespace

// A storage is read straight into its tensor: loading adds about one tensor's worth of
// memory, not two (the whole file held, then copied out), for both containers. Measured as
// `cp2 convert --list`'s peak RSS against the same command on a checkpoint of 16 elements.
TEST(Checkpoint, StoragesAreReadInPlace) {
  const int64_t n = int64_t(64) << 20;  // 256 MiB of float32
  const double tensor_mib = n * 4 / 1048576.0;
  auto legacy = [](const std::string& name, int64_t numel) {
    const std::string pk = legacy_pickles(numel);
    return sparse_file(name, pk + std::string(reinterpret_cast<const char*>(&numel), 8), pk.size() + 8 + 4 * numel);
  };
  auto zip = [](const std::string& name, int64_t numel) {
    const std::string p = ::testing::TempDir() + name;
    auto root = py::dict(true);
    py::set(root, "big", py::tensor(torch::zeros({numel})));
    io::save_checkpoint(p, root);
    return p;
  };
  for (const auto& [kind, make] : {std::pair<std::string, std::function<std::string(const std::string&, int64_t)>>{"legacy", legacy},
                                   {"zip", zip}}) {
    const auto small = run_measured("convert --list " + make("inplace_small.pt", 16));
    const std::string big_path = make("inplace_big.pt", n);
    const auto big = run_measured("convert --list " + big_path);
    std::filesystem::remove(big_path);
    ASSERT_EQ(small.rc, 0) << small.out;
    ASSERT_EQ(big.rc, 0) << big.out;
    EXPECT_NE(big.out.find("big"), std::string::npos) << big.out;
    EXPECT_NE(big.out.find("67108864"), std::string::npos) << big.out;  // big	[67108864] Float
    const double added = big.peak_mib - small.peak_mib;
    EXPECT_GT(added, 0.9 * tensor_mib) << kind << ": the tensor was not loaded? " << big.peak_mib << " vs " << small.peak_mib;
    EXPECT_LT(added, 1.4 * tensor_mib) << kind << ": " << added << " MiB for a " << tensor_mib << " MiB tensor";
  }
}

// A corrupt legacy file is refused from the first part read, not after reading (up to) all of
// it into memory: only the pickles running past that part read further. Two 2 GiB files (holes
// past their pickles): a bad opcode, and a string that claims 3 GiB.
TEST(CheckpointErrors, CorruptLegacyIsRefusedWithoutReadingItAll) {
  const uint64_t size = uint64_t(2) << 30;
  const std::string head = legacy_preamble();
  const auto bad_op = sparse_file("corrupt_op.pt", head + "\x80\x02\xfe", size);
  std::string claim = "\x80\x02X";
  const uint32_t three_gib = 3u << 30;
  claim.append(reinterpret_cast<const char*>(&three_gib), 4);
  const auto bad_len = sparse_file("corrupt_len.pt", head + claim, size);
  const auto base = run_measured("convert --list " + fixture("dtypes_legacy.pt"));
  ASSERT_EQ(base.rc, 0) << base.out;
  for (const auto& [path, says] : {std::pair<std::string, std::string>{bad_op, "unsupported pickle opcode"},
                                   {bad_len, "unexpected end of data, wanted 3221225472 more bytes"}}) {
    const auto r = run_measured("convert --list " + path);
    EXPECT_NE(r.rc, 0) << r.out;
    EXPECT_NE(r.out.find(path + ": cannot unpickle (" + says), std::string::npos) << r.out;
    EXPECT_LT(r.peak_mib - base.peak_mib, 64) << path << ": " << r.peak_mib << " MiB against " << base.peak_mib;
    std::filesystem::remove(path);
  }
}

// A storage reference whose element count the file cannot hold is refused before anything is
// allocated for it (2^40 floats would be 4 TiB), with the storage and the file's size named.
TEST(CheckpointErrors, LegacyStorageLargerThanItsFile) {
  std::string pk = legacy_pickles(16);
  const size_t cpu = pk.find(std::string("X\x03\x00\x00\x00" "cpu", 8));
  const size_t count = pk.find(std::string("J\x10\x00\x00\x00", 5), cpu);
  ASSERT_NE(count, std::string::npos);
  const int64_t huge = int64_t(1) << 40, sixteen = 16;
  pk.replace(count, 5, "\x8a\x08" + std::string(reinterpret_cast<const char*>(&huge), 8));  // LONG1, 8 bytes
  const std::string data(64, '\0');
  const auto p = write_bytes("legacy_huge_count.pt", pk + std::string(reinterpret_cast<const char*>(&sixteen), 8) + data);
  expect_error([&] { io::load_checkpoint(p); },
               {p + ": storage '0' of 1099511627776 elements does not fit in the file's", "(truncated or corrupt file)"});
}

// The zip CRC-32 is computed in 1 MiB pieces over the threads and joined: equal to the plain
// bitwise CRC at every piece boundary.
TEST(Zip, Crc32InPiecesEqualsTheBitwiseCrc) {
  auto bitwise = [](const std::string& s) {
    uint32_t c = 0xffffffffu;
    for (unsigned char b : s) {
      c ^= b;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
  };
  EXPECT_EQ(io::crc32_of("123456789", 9), 0xcbf43926u);  // the CRC-32 check value
  std::string data((5u << 20) + 123, '\0');
  uint32_t x = 12345;
  for (auto& ch : data) ch = static_cast<char>((x = x * 1103515245u + 12345u) >> 24);
  for (size_t n : {size_t(0), size_t(1), size_t(1) << 20, (size_t(1) << 20) + 1, (size_t(2) << 20) - 1, data.size()}) {
    const std::string part = data.substr(0, n);
    EXPECT_EQ(io::crc32_of(part.data(), part.size()), bitwise(part)) << n << " bytes";
  }
}

// Corruption anywhere in a file gives cp2::Error naming the file, or a load (a flipped byte
// inside a legacy tensor, or in a zip entry whose CRC-32 is not checked), never another
// exception (std::out_of_range, std::invalid_argument, bad_alloc) or a crash: random bytes
// set, bits flipped and cuts, at fixed seeds, on both containers and the deflated zip, read
// from the file and (every 8th) through a pipe.
TEST(CheckpointErrors, RandomCorruptionIsAlwaysACleanError) {
  std::mt19937 rng(20261205);
  // torch.save with compute_crc32 = False writes CRC fields of 0, which are not checked: its
  // corruptions reach the pickle and the storages as a legacy file's do.
  auto without_crcs = [](std::string z) {
    for (const auto& [sig, at] : {std::pair<std::string, size_t>{"PK\x03\x04", 14}, {"PK\x01\x02", 16}})
      for (size_t p = z.find(sig); p != std::string::npos; p = z.find(sig, p + 4)) z.replace(p + at, 4, 4, '\0');
    return z;
  };
  const std::string no_crc = write_bytes("dtypes_no_crc.pt", without_crcs(io::read_file(fixture("dtypes.pt"))));
  ASSERT_TRUE(torch::equal(io::load_checkpoint(no_crc).root->get("f32")->tensor,
                           io::load_checkpoint(fixture("dtypes.pt")).root->get("f32")->tensor));
  for (const std::string& name : {"dtypes.pt", "dtypes_deflated.pt", "dtypes_legacy.pt", "dtypes_no_crc.pt"}) {
    const std::string good = io::read_file(name == "dtypes_no_crc.pt" ? no_crc : fixture(name));
    int loaded = 0, refused = 0;
    for (int k = 0; k < 1000; ++k) {
      std::string bad = good;
      const int how = k % 3;
      std::string what;
      if (how == 2) {
        const size_t n = rng() % bad.size();
        bad.resize(n);
        what = "cut at " + std::to_string(n);
      } else {
        for (int m = 1 + rng() % 3; m > 0; --m) {  // 1-3 bytes
          const size_t at = rng() % bad.size();
          if (how == 0) bad[at] = static_cast<char>(rng());
          else bad[at] ^= static_cast<char>(1u << (rng() % 8));
          what += (how == 0 ? " set byte " : " flipped a bit of byte ") + std::to_string(at);
        }
      }
      auto attempt = [&](const std::string& path) {
        try {
          io::load_checkpoint(path);
          ++loaded;
        } catch (const Error& e) {
          ++refused;
          EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << name << what << ": " << e.what();
          // The last-resort wrapper's words: each fault should have its own check before it.
          EXPECT_EQ(std::string(e.what()).find("unexpected fault"), std::string::npos) << name << what << ": " << e.what();
        } catch (const std::exception& e) {
          ADD_FAILURE() << name << what << " (" << path << "): not a cp2::Error: " << e.what();
        }
      };
      if (k % 8 == 7)
        through_pipe(bad, attempt);
      else
        attempt(write_bytes("fuzz.pt", bad));
    }
    EXPECT_GT(refused, 500) << name;  // most corruptions are refused
    std::printf("%s: %d loaded, %d refused\n", name.c_str(), loaded, refused);
  }
}

TEST(CheckpointErrors, MissingFile) {
  expect_error([] { io::load_checkpoint("/nonexistent/w.pt"); }, {"/nonexistent/w.pt", "cannot open"});
}

TEST(CheckpointErrors, EmptyAndNotACheckpoint) {
  auto e = write_bytes("empty.pt", "");
  expect_error([&] { io::load_checkpoint(e); }, {e, "empty"});
  auto txt = write_bytes("text.pt", "hello, this is a text file and not a checkpoint\n");
  expect_error([&] { io::load_checkpoint(txt); }, {txt, "not a PyTorch checkpoint"});
  // A pickle that is not torch's legacy stream.
  auto pk = write_bytes("plain.pkl", std::string("\x80\x02K\x05.", 5));
  expect_error([&] { io::load_checkpoint(pk); }, {pk, "magic number"});
}

TEST(CheckpointErrors, TruncatedZip) {
  std::string bytes = io::read_file(fixture("resnet18_os16.pt"));
  for (double frac : {0.5, 0.999}) {
    auto p = write_bytes("trunc_zip.pt", bytes.substr(0, static_cast<size_t>(bytes.size() * frac)));
    expect_error([&] { io::load_checkpoint(p); }, {p, "truncated"});
  }
}

TEST(CheckpointErrors, TruncatedLegacy) {
  std::string bytes = io::read_file(fixture("resnet18_os16_legacy.pt"));
  for (size_t n : {size_t(40), size_t(3000), bytes.size() / 2, bytes.size() - 1}) {
    auto p = write_bytes("trunc_legacy.pt", bytes.substr(0, n));
    expect_error([&] { io::load_checkpoint(p); }, {p, "truncated"});
  }
}

// One flipped bit in a tensor's bytes: the zip still parses, so only the entry's CRC-32
// can tell. Both torch.save's files (the fixture) and cp2's own are checked.
TEST(CheckpointErrors, CorruptTensorBytesFailTheCrc) {
  auto flip_inside = [](const std::string& path, const at::Tensor& t, const std::string& name) {
    std::string bytes = io::read_file(path);
    const std::string needle(static_cast<const char*>(t.data_ptr()), 64);  // the tensor's first 64 bytes
    const size_t at = bytes.find(needle);
    EXPECT_NE(at, std::string::npos) << "tensor bytes not found in " << path;
    EXPECT_EQ(bytes.find(needle, at + 1), std::string::npos) << "tensor bytes found twice in " << path;
    bytes[at + 40] ^= 0x10;
    return write_bytes(name, bytes);
  };
  // torch.save's CRCs agree with cp2's (the fixture loads), and a flip is caught.
  at::Tensor w;  // its largest tensor
  for (auto& [k, t] : cp2::test::load_tensors(fixture("resnet18_os16.pt")))
    if (!w.defined() || t.numel() > w.numel()) w = t.contiguous();
  ASSERT_GT(w.numel(), 1000);
  auto bad = flip_inside(fixture("resnet18_os16.pt"), w, "flipped_torch.pt");
  expect_error([&] { io::load_checkpoint(bad); }, {bad, "zip entry '", "/data/", "fails its CRC-32 check", "corrupt"});

  // cp2's writer: the same, and zeroed CRC fields (torch.save with compute_crc32 = False)
  // are taken as "not computed", so such a file still loads.
  const at::Tensor mine = torch::arange(4096, torch::kFloat) * 0.25;
  std::string p = ::testing::TempDir() + "crc_mine.pt";
  io::save_checkpoint(p, io::to_state_dict({{"w", mine}, {"v", torch::ones({3})}}));
  auto bad2 = flip_inside(p, mine, "flipped_mine.pt");
  expect_error([&] { io::load_checkpoint(bad2); }, {bad2, "fails its CRC-32 check"});
  std::string bytes = io::read_file(p);
  int zeroed = 0;
  for (size_t at = bytes.find("PK\x01\x02"); at != std::string::npos; at = bytes.find("PK\x01\x02", at + 4), ++zeroed)
    bytes.replace(at + 16, 4, std::string(4, '\0'));
  EXPECT_GE(zeroed, 3);  // data.pkl, version and the storages at least
  auto no_crc = write_bytes("no_crc.pt", bytes);
  auto back = cp2::test::load_tensors(no_crc);
  ASSERT_EQ(back.count("w"), 1u);
  EXPECT_TRUE(torch::equal(back.at("w"), mine));
}

TEST(CheckpointErrors, UnsupportedDtype) {
  auto p = fixture("complex.pt");
  expect_error([&] { io::load_checkpoint(p); }, {p, "ComplexFloatStorage", "expected one of", "FloatStorage"});
}

TEST(CheckpointErrors, UnwritableDestination) {
  auto root = io::to_state_dict({{"w", torch::ones({2})}});
  expect_error([&] { io::save_checkpoint("/nonexistent/dir/out.pt", root); }, {"/nonexistent/dir/out.pt", "cannot write"});
  // A folder standing where the file goes is said as such, and no temp file is left beside it.
  const auto dir = cp2::test::temp_dir("ck_folder_dest");
  std::filesystem::create_directories(dir + "/x.pt/inner");
  expect_error([&] { io::save_checkpoint(dir + "/x.pt", root); }, {dir + "/x.pt: is a folder; expected the name of a file"});
  expect_error([&] { io::write_file_atomic(dir + "/x.pt", "text"); }, {dir + "/x.pt: is a folder; expected the name of a file"});
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 1);
}

// The line both RunFolder and predict print for killed writes' temp files: one wording, the
// size in the unit that suits it.
TEST(AtomicFile, DescribeRemovedTempFiles) {
  EXPECT_EQ(io::describe({}, "runs/a"), "");
  EXPECT_EQ(io::describe({{"x.png.9.tmp"}, 10}, "pred"),
            "pred: removed 1 unfinished file (10 bytes) of a write that was killed: x.png.9.tmp");
  EXPECT_EQ(io::describe({{"a.json.9.tmp", "b.json.9.tmp"}, 1536}, "runs/a"),
            "runs/a: removed 2 unfinished files (1.5 KiB) of a write that was killed: a.json.9.tmp, ...");
  EXPECT_EQ(io::describe({{"checkpoints/c.pt.9.tmp"}, uint64_t(3) << 20}, "runs/a"),
            "runs/a: removed 1 unfinished file (3.0 MiB) of a write that was killed: checkpoints/c.pt.9.tmp");
}

}  // namespace
