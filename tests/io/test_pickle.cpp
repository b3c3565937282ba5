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
}

TEST(Pickle, StorageDtypes) {
  EXPECT_EQ(py::storage_dtype("torch.HalfStorage", "x"), at::kHalf);
  EXPECT_EQ(py::storage_dtype("torch.BFloat16Storage", "x"), at::kBFloat16);
  EXPECT_EQ(py::storage_class(at::kLong), "LongStorage");
  cp2::test::expect_error([] { py::storage_dtype("torch.QInt8Storage", "w.pt"); }, {"w.pt", "QInt8Storage"});
}

}  // namespace
