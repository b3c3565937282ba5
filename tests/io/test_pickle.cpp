#include <torch/torch.h>

#include "../helpers.h"
#include "cp2/io/pickle.h"

using namespace cp2;

namespace {

py::ObjPtr roundtrip(const py::ObjPtr& o, std::vector<at::Tensor>* store) {
  std::string bytes = py::pickle(o, [&](const at::Tensor& t) {
    store->push_back(t);
    return std::to_string(store->size() - 1);
  });
  size_t pos = 0;
  auto back = py::unpickle(bytes, pos, [&](const py::ObjPtr& pid) {
    EXPECT_EQ(pid->items.at(0)->s, "storage");
    EXPECT_EQ(pid->items.at(1)->s, "torch.FloatStorage");
    EXPECT_EQ(pid->items.at(3)->s, "cpu");
    return py::tensor(store->at(std::stoul(pid->items.at(2)->s)).reshape({-1}));
  }, "mem");
  EXPECT_EQ(pos, bytes.size());
  return back;
}

TEST(Pickle, RoundTripValues) {
  auto d = py::dict(true);
  py::set(d, "i", py::integer(-123456789012LL));
  py::set(d, "small", py::integer(200));
  py::set(d, "f", py::real(-1.25e-7));
  py::set(d, "t", py::tuple({py::str("a"), py::boolean(true), py::none()}));
  py::set(d, "x", py::tensor(torch::arange(6, torch::kFloat).reshape({2, 3})));
  std::vector<at::Tensor> store;
  auto b = roundtrip(d, &store);
  EXPECT_TRUE(b->ordered);
  EXPECT_EQ(b->get("i")->i, -123456789012LL);
  EXPECT_EQ(b->get("small")->i, 200);
  EXPECT_DOUBLE_EQ(b->get("f")->f, -1.25e-7);
  ASSERT_EQ(b->get("t")->kind, py::Kind::Tuple);
  EXPECT_EQ(b->get("t")->items[0]->s, "a");
  EXPECT_TRUE(torch::equal(b->get("x")->tensor, torch::arange(6, torch::kFloat).reshape({2, 3})));
}

TEST(Pickle, TruncatedAndUnknownOpcode) {
  auto none_load = [](const py::ObjPtr&) { return py::none(); };
  std::string bytes = py::pickle(py::list({py::integer(1), py::str("abc")}), [](const at::Tensor&) { return ""; });
  size_t pos = 0;
  cp2::test::expect_error([&] { py::unpickle(bytes.substr(0, bytes.size() - 3), pos, none_load, "f.pkl"); },
                          {"f.pkl", "unexpected end of data"});
  pos = 0;
  cp2::test::expect_error([&] { py::unpickle(std::string("\x80\x02\xff", 3), pos, none_load, "g.pkl"); },
                          {"g.pkl", "opcode 0xff"});
  // Running out of data is its own type, with the length the read wanted (a reader holding a
  // file's first part reads that much of it); any other fault is not.
  pos = 0;
  try {
    py::unpickle(bytes.substr(0, bytes.size() - 3), pos, none_load, "f.pkl");
    ADD_FAILURE() << "no error";
  } catch (const py::EndOfData& e) {
    EXPECT_EQ(e.needed, bytes.size() - 2);  // "abc" ends before the list's APPENDS and STOP
  }
  pos = 0;
  try {
    py::unpickle(std::string("\x80\x02\xff", 3), pos, none_load, "g.pkl");
    ADD_FAILURE() << "no error";
  } catch (const py::EndOfData&) {
    ADD_FAILURE() << "an unknown opcode is no end of data";
  } catch (const Error&) {
  }
  // A corrupt 8-byte length (BINUNICODE8) that would wrap pos + n round: an error, no crash.
  std::string huge("\x80\x04\x8d", 3);
  const uint64_t n = UINT64_MAX - 5;  // 11 + n wraps to 5
  huge.append(reinterpret_cast<const char*>(&n), 8);
  huge += "abc.";
  pos = 0;
  try {
    py::unpickle(huge, pos, none_load, "h.pkl");
    ADD_FAILURE() << "no error";
  } catch (const py::EndOfData& e) {
    EXPECT_EQ(e.needed, UINT64_MAX);
    EXPECT_NE(std::string(e.what()).find("h.pkl: cannot unpickle (unexpected end of data, wanted 18446744073709551610 "
                                         "more bytes at byte 11)"),
              std::string::npos)
        << e.what();
  }
}

// Corrupt numbers in a pickle are its own errors, never std::stoll's exceptions, a memo of
// gigabytes, or a tensor view past its storage.
TEST(Pickle, CorruptNumbersAreErrors) {
  auto none_load = [](const py::ObjPtr&) { return py::none(); };
  auto fails = [&](const std::string& bytes, const std::string& says) {
    size_t pos = 0;
    cp2::test::expect_error([&] { py::unpickle(bytes, pos, none_load, "c.pkl"); }, {"c.pkl: cannot unpickle (" + says});
  };
  fails(std::string("\x80\x02I12abc\n.", 10), "bad integer '12abc'");
  fails(std::string("\x80\x02L\n.", 6), "bad integer ''");
  fails(std::string("\x80\x02I99999999999999999999\n.", 26), "bad integer '99999999999999999999'");
  fails(std::string("\x80\x02" "F1.5x\n.", 9), "bad float '1.5x'");
  fails(std::string("\x80\x02Np-3\n.", 9), "bad memo key '-3'");
  fails(std::string("\x80\x02Nr\xff\xff\xff\xff.", 9), "memo key 4294967295 out of range");
  // _rebuild_tensor_v2(storage, offset, sizes, strides) over a 6-element storage.
  auto storage6 = [](const py::ObjPtr&) { return py::tensor(torch::arange(6, torch::kFloat)); };
  auto rebuild = [&](const std::string& off, const std::string& sizes, const std::string& strides) {
    const std::string b = "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(NQI" + off + "\n(" + sizes + "t(" + strides + "ttR.";
    size_t pos = 0;
    return py::unpickle(b, pos, storage6, "c.pkl");
  };
  EXPECT_TRUE(torch::equal(rebuild("0", "I2\nI3\n", "I3\nI1\n")->tensor, torch::arange(6, torch::kFloat).view({2, 3})));
  EXPECT_TRUE(torch::equal(rebuild("5", "", "")->tensor, torch::tensor(5.f)));
  EXPECT_EQ(rebuild("9", "I0\nI3\n", "I3\nI1\n")->tensor.numel(), 0);  // empty: any offset
  for (const auto& [off, sizes, strides, says] : std::vector<std::tuple<std::string, std::string, std::string, std::string>>{
           {"1", "I2\nI3\n", "I3\nI1\n", "tensor of size [2, 3] at offset 1 lies past its storage's 6 elements"},
           {"6", "", "", "tensor of size [] at offset 6 lies past"},
           {"0", "I2\nI3\n", "I3\n", "tensor with sizes [2, 3], strides [3] and offset 0"},
           {"0", "I-1\n", "I1\n", "tensor with sizes [-1], strides [1]"},
           {"-1", "I1\n", "I1\n", "and offset -1"},
           {"0", "I1099511627776\nI1099511627776\n", "I1099511627776\nI1\n", "lies past its storage's 6 elements"},
           {"0", "I4611686018427387904\nI3\n", "I4\nI1\n", "lies past"}})
    cp2::test::expect_error([&, &off = off, &sizes = sizes, &strides = strides] { rebuild(off, sizes, strides); }, {says});
}

TEST(Pickle, StorageDtypes) {
  EXPECT_EQ(py::storage_dtype("torch.HalfStorage", "x"), at::kHalf);
  EXPECT_EQ(py::storage_dtype("torch.BFloat16Storage", "x"), at::kBFloat16);
  EXPECT_EQ(py::storage_class(at::kLong), "LongStorage");
  cp2::test::expect_error([] { py::storage_dtype("torch.QInt8Storage", "w.pt"); }, {"w.pt", "QInt8Storage"});
}

}  // namespace
